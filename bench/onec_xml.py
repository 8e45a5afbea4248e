"""MB/s, rows/s and peak RSS of the 1C XML sources on generated files, beside a bare defusedxml iterparse.

    python bench/onec_xml.py [--counterparties 200000] [--batch-size 5000]

Writes a CommerceML 2.10 file (counterparties with requisites, address, contacts and a contact person, plus an
order every 20 counterparties; windows-1251) and an EnterpriseData 1.21 message (Справочник.Контрагенты with escaped
contact information, plus orders), then reads each in a child process (CPU seconds and peak RSS from wait4:
CPU time, not wall time, so that the figures hold on a busy machine; on an idle one they are the same):
``commerceml`` / ``enterprisedata`` kind ``counterparties`` (two walks: the list, then the documents for embedded
counterparties), kind ``documents``, and the floor: defusedxml iterparse with lines and nothing else.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "onec_xml"


def write_cml(path: Path, n: int) -> None:
    with open(path, "w", encoding="cp1251") as f:
        f.write('<?xml version="1.0" encoding="windows-1251"?>\n<КоммерческаяИнформация xmlns="urn:1C.ru:commerceml_2" '
                'ВерсияСхемы="2.10" ДатаФормирования="2024-03-01T10:00:00">\n<Классификатор><Контрагенты>\n')
        for i in range(n):
            f.write(f"""<Контрагент><Ид>0a1b2c3d-0000-11eb-b762-{i:012d}</Ид><Наименование>Компания {i}   </Наименование>
<РеквизитыЮрЛица><ОфициальноеНаименование>ООО "Компания {i}"</ОфициальноеНаименование><ИНН>{7700000000 + i}</ИНН><КПП>770101001</КПП><ОКПО/>
<ЮридическийАдрес><Представление>119021, г. Москва, ул. Тимура Фрунзе, д. {i % 300}</Представление></ЮридическийАдрес></РеквизитыЮрЛица>
<Адрес><Представление>,</Представление><АдресноеПоле><Тип>Почтовый индекс</Тип><Значение>101000</Значение></АдресноеПоле><АдресноеПоле><Тип>Город</Тип><Значение>Москва</Значение></АдресноеПоле></Адрес>
<Контакты><Контакт><Тип>Телефон рабочий</Тип><Значение>+7 495 {i % 1000:03d}-00-00</Значение></Контакт><Контакт><Тип>Электронная почта</Тип><Значение>c{i}@example.ru</Значение></Контакт></Контакты>
<Представители><Представитель><Отношение>Контактное лицо</Отношение><Ид>rep-{i}</Ид><Наименование>Иванов Иван Иванович</Наименование></Представитель></Представители>
</Контрагент>
""")
        f.write("</Контрагенты></Классификатор>\n")
        for i in range(0, n, 20):
            f.write(f"""<Документ><Ид>doc-{i}</Ид><Номер>{i}</Номер><Дата>2024-02-29</Дата><Время>10:00:00</Время><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль><Валюта>руб</Валюта><Курс>1</Курс><Сумма>1500.50</Сумма>
<Контрагенты><Контрагент><Ид>0a1b2c3d-0000-11eb-b762-{i:012d}</Ид><Наименование>Компания {i}</Наименование><Роль>Покупатель</Роль></Контрагент></Контрагенты>
<Товары><Товар><Ид>g-1</Ид><Наименование>Кирпич</Наименование><ЦенаЗаЕдиницу>750.25</ЦенаЗаЕдиницу><Количество>2</Количество><Сумма>1500.50</Сумма></Товар></Товары></Документ>
""")
        f.write("</КоммерческаяИнформация>\n")


def _ci(kind: str, value: str) -> str:
    inner = f'<КонтактнаяИнформация xmlns="http://www.v8.1c.ru/ssl/contactinfo" Представление="{value}"/>'
    return (f"<Строка><ВидКонтактнойИнформации>{kind}</ВидКонтактнойИнформации><ЗначенияПолей>{escape(inner)}"
            f"</ЗначенияПолей></Строка>")


def write_ed(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8-sig") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<Message xmlns:msg="http://www.1c.ru/SSL/Exchange/Message">\n'
                "<msg:Header><msg:Format>http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.21</msg:Format></msg:Header>\n"
                '<Body xmlns="http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.21">\n')
        for i in range(n):
            f.write(f"""<Справочник.Контрагенты><КлючевыеСвойства><Ссылка>4b9f6867-7668-11eb-b762-{i:012d}</Ссылка><Наименование>Компания {i}</Наименование>
<НаименованиеПолное>ООО "Компания {i}"</НаименованиеПолное><ИНН>{7700000000 + i}</ИНН><КПП>770101001</КПП><ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо></КлючевыеСвойства>
<КонтактнаяИнформация>{_ci("ЮридическийАдрес", f"119021, г. Москва, ул. Тимура Фрунзе, д. {i % 300}")}{_ci("Телефон", "+7 (495) 739-70-00")}{_ci("АдресЭлектроннойПочты", f"c{i}@example.ru")}</КонтактнаяИнформация>
</Справочник.Контрагенты>
""")
        for i in range(0, n, 20):
            f.write(f"""<Документ.ЗаказКлиента><КлючевыеСвойства><Ссылка>doc-{i}</Ссылка><Дата>2024-01-31T10:00:00</Дата><Номер>{i}</Номер></КлючевыеСвойства><Сумма>1500.00</Сумма>
<Контрагент><Ссылка>4b9f6867-7668-11eb-b762-{i:012d}</Ссылка><Наименование>Компания {i}</Наименование></Контрагент>
<Товары><Строка><Номенклатура><Ссылка>n-1</Ссылка><Наименование>Кирпич</Наименование></Номенклатура><Количество>2</Количество><Цена>750</Цена><Сумма>1500.00</Сумма></Строка></Товары></Документ.ЗаказКлиента>
""")
        f.write("</Body>\n</Message>\n")


CHILD = """
import logging, sys, time
logging.disable(logging.WARNING)
sys.path.insert(0, {root!r})
what, path, kind, batch = sys.argv[1:5]
t = time.perf_counter()
rows = 0
if what == "floor":  # defusedxml's iterparse alone (encoding from the declaration), elements dropped as they end
    from defusedxml.ElementTree import iterparse
    stack = []
    for event, el in iterparse(path, events=("start", "end")):
        if event == "start":
            stack.append(el)
            continue
        stack.pop()
        rows += 1
        el.clear()
        if stack:
            stack[-1].remove(el)
else:
    if what == "commerceml":
        from connectors.onec.commerceml import CommerceMLSource as S
    else:
        from connectors.onec.enterprisedata import EnterpriseDataSource as S
    for b in S(path, kind=kind).read(None, int(batch)):
        rows += b.read_count
print(rows, time.perf_counter() - t)
"""


def run(what: str, path: Path, kind: str, batch: int) -> tuple[int, float, float]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT)), what, str(path), kind, str(batch)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().split()
    if status != 0 or len(out) != 2:
        raise SystemExit(f"{what} {kind} failed (status {status})")
    return int(out[0]), usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counterparties", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--keep", action="store_true", help="keep the generated files in bench/.work/onec_xml")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cml, ed = WORK / "commerceml.xml", WORK / "enterprisedata.xml"
    write_cml(cml, args.counterparties)
    write_ed(ed, args.counterparties)
    print(f"{'file':<22} {'reader':<30} {'MB':>7} {'records':>9} {'CPU s':>7} {'MB/s':>7} {'rec/s':>9} {'RSS MB':>7}")
    for what, path in (("commerceml", cml), ("enterprisedata", ed)):
        mb = path.stat().st_size / 1e6
        for label, reader, kind in (("defusedxml iterparse (floor)", "floor", "-"),
                                    (f"{what} counterparties", what, "counterparties"),
                                    (f"{what} documents", what, "documents")):
            n, secs, rss = run(reader, path, kind, args.batch_size)
            print(f"{path.name:<22} {label:<30} {mb:7.1f} {n:9d} {secs:7.2f} {mb / secs:7.1f} {n / secs:9.0f} "
                  f"{rss:7.0f}" + ("  (records = elements)" if reader == "floor" else ""))
    if not args.keep:
        cml.unlink()
        ed.unlink()


if __name__ == "__main__":
    main()
