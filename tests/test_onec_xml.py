"""1C XML sources: a customer hands over CommerceML exchange files (1C <-> site, Bitrix orders) and EnterpriseData
messages; we read counterparties, contact persons, orders and their lines out of them, whatever the version,
namespace and encoding, and load them through the engine.

Every file here is generated in the shape the reference describes (../shared/reference/1c-dadata.md, sections 1-2),
with the oddities real files have: empty tags, padded values, the empty date, bare dates in dateTime fields,
``КодПоОКПО``, ``Электронная почта``, ``Представление`` that is just ``,``, duplicate and embedded counterparties.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import sqlalchemy as sa

from connectors.base import FILE_COLUMN, LINE_COLUMN, BadInputError, TerminalError
from connectors.onec.commerceml import COLUMNS as CML_COLUMNS
from connectors.onec.commerceml import CommerceMLSource
from connectors.onec.enterprisedata import EnterpriseDataSource, contact_info_value
from connectors.onec.xmlstream import BadValue, Element, iter_events, norm_date, norm_number, split_fio

BOM = b"\xef\xbb\xbf"
CML2 = "urn:1C.ru:commerceml_2"
CML3 = "urn:1C.ru:commerceml_3"


def write(path: Path, text: str, *, encoding: str = "utf-8", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((BOM if bom else b"") + text.encode(encoding))
    return path


def read_all(src, cursor=None, batch_size: int = 1000):
    batches = list(src.read(cursor, batch_size))
    rows = [r for b in batches for r in b.table.to_pylist()]
    rejects = [r for b in batches for r in b.rejects.to_pylist()]
    return batches, rows, rejects


def pick(row: dict, *cols: str) -> dict:
    return {c: row[c] for c in cols}


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth occurrence of ``needle`` in a generated file."""
    pos = -1
    for _ in range(nth):
        pos = text.index(needle, pos + 1)
    return text.count("\n", 0, pos) + 1


# --- generated files ---------------------------------------------------------------------------------------

PAD = " " * 90


def cml_2_10_counterparties() -> str:
    """1C's counterparty list: CommerceML 2.10 with its namespace, under Классификатор, for windows-1251."""
    return f"""<?xml version="1.0" encoding="windows-1251"?>
<КоммерческаяИнформация xmlns="{CML2}" ВерсияСхемы="2.10" ДатаФормирования="2024-03-01T10:00:00">
<Классификатор>
<Ид>cls-1</Ид>
<Наименование>Классификатор (Основной каталог товаров)</Наименование>
<Контрагенты>
<Контрагент>
  <Ид> 0a1b2c3d-0000-11eb-b762-000000000001 </Ид>
  <НомерВерсии>AAAAAQAAAAA=</НомерВерсии>
  <ПометкаУдаления>false</ПометкаУдаления>
  <Наименование>Вектор{PAD}</Наименование>
  <РеквизитыЮрЛица>
    <ОфициальноеНаименование>ООО "Вектор"</ОфициальноеНаименование>
    <ЮридическийАдрес>
      <Представление>,</Представление>
      <АдресноеПоле><Тип>Почтовый индекс</Тип><Значение>119021</Значение></АдресноеПоле>
      <АдресноеПоле><Тип>Город</Тип><Значение>Москва</Значение></АдресноеПоле>
      <АдресноеПоле><Тип>Улица</Тип><Значение>ул. Тимура Фрунзе</Значение></АдресноеПоле>
      <АдресноеПоле><Тип>Дом</Тип><Значение>11</Значение></АдресноеПоле>
    </ЮридическийАдрес>
    <ИНН>7707083893</ИНН>
    <КПП>773601001</КПП>
    <КодПоОКПО>12345678</КодПоОКПО>
  </РеквизитыЮрЛица>
  <Адрес><Представление> г. Москва, ул. Льва Толстого, д. 16 </Представление></Адрес>
  <Контакты>
    <Контакт><Тип>Телефон рабочий</Тип><Значение>+7 495 739-70-00</Значение></Контакт>
    <Контакт><Тип>Телефон мобильный</Тип><Значение>+7 916 000-00-01</Значение></Контакт>
    <Контакт><Тип>Электронная почта</Тип><Значение>info@vektor.example</Значение></Контакт>
    <Контакт><Тип>Факс</Тип><Значение>+7 495 739-70-01</Значение></Контакт>
    <Контакт><Тип>ВебСайт</Тип><Значение>vektor.example</Значение></Контакт>
    <Контакт><Тип>Skype</Тип><Значение>vektor.office</Значение></Контакт>
  </Контакты>
  <Представители>
    <Представитель>
      <Отношение>Контактное лицо</Отношение>
      <Ид>rep-1</Ид>
      <Наименование>Смирнова Ольга Петровна</Наименование>
    </Представитель>
    <Представитель>
      <Контрагент>
        <Отношение>Контактное лицо</Отношение>
        <Наименование>Козлов Пётр</Наименование>
        <Контакты><Контакт><Тип>Почта</Тип><Значение>kozlov@vektor.example</Значение></Контакт></Контакты>
      </Контрагент>
    </Представитель>
  </Представители>
</Контрагент>
<Контрагент>
  <Ид>0a1b2c3d-0000-11eb-b762-000000000002</Ид>
  <Наименование>Иванов Иван Иванович</Наименование>
  <РеквизитыФизЛица>
    <ПолноеНаименование>Иванов Иван Иванович</ПолноеНаименование>
    <Фамилия>Иванов</Фамилия><Имя>Иван</Имя><Отчество>Иванович</Отчество>
    <ДатаРождения>1980-05-17</ДатаРождения>
    <Пол>М</Пол>
    <ИНН>500100732259</ИНН>
    <АдресРегистрации><Представление>Московская обл., г. Химки, ул. Мира, д. 1, кв. 2</Представление></АдресРегистрации>
  </РеквизитыФизЛица>
  <Контакты><Контакт><Тип>Почта</Тип><Значение>ivanov@mail.example</Значение></Контакт></Контакты>
</Контрагент>
<Контрагент>
  <Ид>0a1b2c3d-0000-11eb-b762-000000000003</Ид>
  <Наименование>Сидорова Анна</Наименование>
  <РеквизитыФизЛица>
    <ПолноеНаименование>Сидорова Анна</ПолноеНаименование>
    <ДатаРождения>0001-01-01T00:00:00</ДатаРождения>
    <ИНН/>
  </РеквизитыФизЛица>
  <Адрес><Представление/><Комментарий/></Адрес>
  <Контакты/>
</Контрагент>
<Контрагент>
  <Наименование>Альфа</Наименование>
  <РеквизитыЮрЛица>
    <ОфициальноеНаименование>АО "Альфа"</ОфициальноеНаименование>
    <ИНН>7710140679</ИНН><КПП>771001001</КПП><ОКПО>87654321</ОКПО>
  </РеквизитыЮрЛица>
</Контрагент>
<Контрагент>
  <Ид/>
  <Наименование>Без реквизитов</Наименование>
  <РеквизитыЮрЛица><ОфициальноеНаименование>Без реквизитов</ОфициальноеНаименование><ИНН/><КПП/></РеквизитыЮрЛица>
</Контрагент>
<Контрагент>
  <Ид>0a1b2c3d-0000-11eb-b762-000000000001</Ид>
  <Наименование>Вектор (дубль)</Наименование>
</Контрагент>
<Контрагент>
  <Ид>0a1b2c3d-0000-11eb-b762-000000000007</Ид>
  <Наименование>Кузнецов Олег</Наименование>
  <РеквизитыФизЛица><ПолноеНаименование>Кузнецов Олег</ПолноеНаименование><ДатаРождения>31.02.1980</ДатаРождения></РеквизитыФизЛица>
</Контрагент>
</Контрагенты>
</Классификатор>
<Документ>
  <Ид>order-77</Ид><Номер>77</Номер><Дата>2024-02-29</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>руб</Валюта><Курс>1</Курс><Сумма>990.00</Сумма>
  <Контрагенты>
    <Контрагент><Ид>0a1b2c3d-0000-11eb-b762-000000000001</Ид><Наименование>Вектор</Наименование><Роль>Покупатель</Роль></Контрагент>
    <Контрагент><Ид>12#petrov#Петров Пётр </Ид><Наименование>Петров Пётр</Наименование><Роль>Плательщик</Роль>
      <ПолноеНаименование>Петров Пётр</ПолноеНаименование><Фамилия>Петров</Фамилия><Имя>Пётр</Имя>
      <Контакты><Контакт><Тип>Почта</Тип><Значение>petrov@site.example</Значение></Контакт></Контакты></Контрагент>
  </Контрагенты>
</Документ>
<Документ>
  <Ид>order-78</Ид><Номер>78</Номер><Дата>2024-03-01</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>руб</Валюта><Курс>1</Курс><Сумма>10</Сумма>
  <Контрагенты><Контрагент><Ид>12#petrov#Петров Пётр</Ид><Наименование>Петров Пётр</Наименование><Роль>Покупатель</Роль></Контрагент></Контрагенты>
</Документ>
</КоммерческаяИнформация>
"""


def cml_2_08_orders() -> str:
    """A Bitrix order export (site -> 1C): no namespace, UTF-8 with BOM, bare date in ДатаФормирования."""
    return """<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2024-03-01" ФорматДаты="ДФ=yyyy-MM-dd; ДЛФ=DT" ФорматВремени="ДФ=ЧЧ:мм:сс; ДЛФ=T" РазделительДатаВремя="T" ФорматСуммы="ЧЦ=18; ЧДЦ=2; ЧРД=." ФорматКоличества="ЧЦ=18; ЧДЦ=2; ЧРД=.">
<Документ>
  <Ид>101</Ид>
  <Номер>101</Номер>
  <Дата>2024-02-29</Дата>
  <Время>15:19:27</Время>
  <ХозОперация>Заказ товара</ХозОперация>
  <Роль>Продавец</Роль>
  <Валюта>руб</Валюта>
  <Курс>1</Курс>
  <Сумма>1500.50</Сумма>
  <Комментарий>Позвонить за час</Комментарий>
  <Контрагенты>
    <Контрагент>
      <Ид>5#ivanov#Иван Иванов </Ид>
      <Наименование>Иван Иванов</Наименование>
      <Роль>Покупатель</Роль>
      <ПолноеНаименование>Иванов Иван</ПолноеНаименование>
      <Фамилия>Иванов</Фамилия>
      <Имя>Иван</Имя>
      <АдресРегистрации><Представление>г. Казань, ул. Баумана, д. 5</Представление></АдресРегистрации>
      <Контакты><Контакт><Тип>Почта</Тип><Значение>ivanov@site.example</Значение></Контакт></Контакты>
    </Контрагент>
  </Контрагенты>
  <Товары>
    <Товар>
      <Ид>good-1</Ид><Артикул>A-1</Артикул><Наименование>Кирпич облицовочный</Наименование>
      <БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>
      <ЦенаЗаЕдиницу>750.25</ЦенаЗаЕдиницу><Количество>2</Количество><Сумма>1500.50</Сумма>
    </Товар>
    <Товар>
      <Ид>ORDER_DELIVERY</Ид><Наименование>Доставка заказа</Наименование>
      <БазоваяЕдиница Код="796" НаименованиеПолное="Штука"/>
      <ЦенаЗаЕдиницу>0</ЦенаЗаЕдиницу><Количество>1</Количество><Сумма>0</Сумма>
    </Товар>
    <Товар>
      <Ид>good-2</Ид><Наименование>Раствор</Наименование><Количество>два</Количество><Сумма>0</Сумма>
    </Товар>
  </Товары>
  <ЗначенияРеквизитов>
    <ЗначениеРеквизита><Наименование>Метод оплаты</Наименование><Значение>Наличный расчет</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Заказ оплачен</Наименование><Значение>false</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Отменен</Наименование><Значение>false</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Статус заказа</Наименование><Значение>[N] Принят</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Дата изменения статуса</Наименование><Значение>2024-03-01 09:00:00</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Адрес доставки</Наименование><Значение>420111, г. Казань, ул. Баумана, д. 5</Значение></ЗначениеРеквизита>
  </ЗначенияРеквизитов>
</Документ>
<Документ>
  <Ид>102</Ид><Номер>102</Номер><Дата>2024-03-01</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>RUB</Валюта><Курс>1</Курс><Сумма>1 500,00</Сумма>
  <Контрагенты><Контрагент><Ид>5#ivanov#Иван Иванов </Ид><Наименование>Иван Иванов</Наименование><Роль>Покупатель</Роль></Контрагент></Контрагенты>
</Документ>
<Документ>
  <Ид>103</Ид><Номер>103</Номер><Дата>0001-01-01</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>руб</Валюта><Курс>1</Курс><Сумма>0</Сумма>
  <Контрагенты/>
  <ЗначенияРеквизитов>
    <ЗначениеРеквизита><Наименование>Проведен</Наименование><Значение>true</Значение></ЗначениеРеквизита>
    <ЗначениеРеквизита><Наименование>Дата отгрузки по 1С</Наименование><Значение>2024-03-02T12:00:00</Значение></ЗначениеРеквизита>
  </ЗначенияРеквизитов>
</Документ>
<Документ>
  <Ид/><Номер>104</Номер><Дата>2024-03-01</Дата><Сумма>5</Сумма>
  <Товары><Товар><Ид>good-1</Ид><Наименование>Кирпич</Наименование><Количество>1</Количество><Сумма>5</Сумма></Товар></Товары>
</Документ>
</КоммерческаяИнформация>
"""


def cml_3_1_orders() -> str:
    """Bitrix' CommerceML 3.1 module: the commerceml_3 namespace, each document in a Контейнер."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация xmlns="{CML3}" ВерсияСхемы="3.1" ДатаФормирования="2024-03-05T08:00:00">
<Контейнер>
<Документ>
  <Ид>b-5001</Ид><Номер>5001</Номер><Дата>2024-03-05</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>RUB</Валюта><Курс>1</Курс><Сумма>2400.00</Сумма>
  <Контрагенты>
    <Контрагент>
      <Ид>bx-company-9</Ид><Наименование>ООО "Гамма"</Наименование><Роль>Покупатель</Роль>
      <ОфициальноеНаименование>ООО "Гамма"</ОфициальноеНаименование>
      <ИНН>5408131553</ИНН><КПП>540801001</КПП>
      <Адрес><Представление>630090, Новосибирск, Академгородок</Представление></Адрес>
      <Представители>
        <Представитель><Контрагент><Отношение>Контактное лицо</Отношение><Ид>bx-contact-31</Ид>
          <Наименование>Орлова Мария Сергеевна</Наименование>
          <Контакты><Контакт><Тип>Телефон</Тип><Значение>+7 383 000-00-31</Значение></Контакт></Контакты>
        </Контрагент></Представитель>
      </Представители>
    </Контрагент>
  </Контрагенты>
  <Товары><Товар><Ид>g-9</Ид><Наименование>Сервер</Наименование><ЦенаЗаЕдиницу>1200</ЦенаЗаЕдиницу><Количество>2</Количество><Сумма>2400.00</Сумма>
    <СтавкиНалогов><СтавкаНалога><Наименование>НДС</Наименование><Ставка>20</Ставка></СтавкаНалога></СтавкиНалогов>
    <Налоги><Налог><Наименование>НДС</Наименование><УчтеноВСумме>true</УчтеноВСумме><Сумма>400.00</Сумма></Налог></Налоги>
  </Товар></Товары>
</Документ>
</Контейнер>
<Контейнер>
<Документ>
  <Ид>b-5002</Ид><Номер>5002</Номер><Дата>2024-03-06T11:30:00</Дата><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  <Валюта>RUB</Валюта><Курс>1</Курс><Сумма>100</Сумма>
  <Контрагенты><Контрагент><Ид>bx-company-9</Ид><Наименование>ООО "Гамма"</Наименование><Роль>Покупатель</Роль>
    <Представители><Представитель><Контрагент><Отношение>Контактное лицо</Отношение><Ид>bx-contact-31</Ид>
      <Наименование>Орлова Мария Сергеевна</Наименование></Контрагент></Представитель></Представители>
  </Контрагент></Контрагенты>
</Документ>
</Контейнер>
</КоммерческаяИнформация>
"""


def ci(kind: str, presentation: str, *, english: bool = False) -> str:
    """One КонтактнаяИнформация line with its escaped XML in ЗначенияПолей."""
    if english:
        inner = (f'<ContactInformation xmlns="http://www.v8.1c.ru/ssl/contactinfo" '
                 f'Presentation="{escape(presentation, {chr(34): "&quot;"})}"/>')
    else:
        inner = (f'<КонтактнаяИнформация xmlns="http://www.v8.1c.ru/ssl/contactinfo" '
                 f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                 f'Представление="{escape(presentation, {chr(34): "&quot;"})}"><Комментарий/>'
                 f'<Состав xsi:type="Адрес" Страна="РОССИЯ"/></КонтактнаяИнформация>')
    return (f"<Строка><ВидКонтактнойИнформации>{kind}</ВидКонтактнойИнформации>"
            f"<ЗначенияПолей>{escape(inner)}</ЗначенияПолей></Строка>")


def ed_message(version: str, *, namespaces: bool = True, encoding: str = "UTF-8") -> str:
    """An EnterpriseData message: counterparties with contact information, an order and a sale."""
    body_ns = f' xmlns="http://v8.1c.ru/edi/edi_stnd/EnterpriseData/{version}"' if namespaces else ""
    msg = ' xmlns:msg="http://www.1c.ru/SSL/Exchange/Message"' if namespaces else ""
    p = "msg:" if namespaces else ""
    newer = tuple(int(x) for x in version.split(".")) >= (1, 21)
    extra = "<ИндивидуальныйПредприниматель>false</ИндивидуальныйПредприниматель>" if newer else ""
    return f"""<?xml version="1.0" encoding="{encoding}"?>
<Message{msg} xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<{p}Header>
<{p}Format>http://v8.1c.ru/edi/edi_stnd/EnterpriseData/{version}</{p}Format>
<{p}CreationDate>2024-01-31T09:00:00</{p}CreationDate>
<{p}Confirmation><{p}ExchangePlan>СинхронизацияДанныхЧерезУниверсальныйФормат</{p}ExchangePlan><{p}To>ББ</{p}To><{p}From>УТ</{p}From><{p}MessageNo>12</{p}MessageNo><{p}ReceivedNo>11</{p}ReceivedNo></{p}Confirmation>
<{p}AvailableVersion>1.8</{p}AvailableVersion>
<{p}AvailableVersion>{version}</{p}AvailableVersion>
</{p}Header>
<Body{body_ns}>
<Справочник.Номенклатура><КлючевыеСвойства><Ссылка>n-1</Ссылка><Наименование>Кирпич</Наименование></КлючевыеСвойства></Справочник.Номенклатура>
<Справочник.Контрагенты>
  <КлючевыеСвойства>
    <Ссылка>4b9f6867-7668-11eb-b762-b13668d09050</Ссылка>
    <Наименование>Вектор </Наименование>
    <НаименованиеПолное>ООО "Вектор"</НаименованиеПолное>
    <ИНН>7707083893</ИНН>
    <КПП>773601001</КПП>
    <ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо>
    <СтранаРегистрации><Ссылка>c-643</Ссылка><Код>643</Код><Наименование>РОССИЯ</Наименование></СтранаРегистрации>
    <РегистрационныйНомер>1027700132195</РегистрационныйНомер>{extra}
  </КлючевыеСвойства>
  <ОКПО>12345678</ОКПО>
  <КонтактнаяИнформация>
    {ci("ЮридическийАдрес", '119021, г. Москва, ул. Тимура Фрунзе, д. 11, стр. "Б"')}
    {ci("ФактическийАдрес", "г. Москва, ул. Льва Толстого, д. 16")}
    {ci("Телефон", "+7 (495) 739-70-00")}
    {ci("АдресЭлектроннойПочты", "info@vektor.example", english=True)}
    <Строка><ВидКонтактнойИнформации>Телефон</ВидКонтактнойИнформации><ЗначенияПолей>Представление=+7 (495) 739-70-02
КодСтраны=7</ЗначенияПолей></Строка>
    <Строка><ВидКонтактнойИнформации>ВебСтраница</ВидКонтактнойИнформации><ЗначенияПолей/><Значение>vektor.example</Значение></Строка>
  </КонтактнаяИнформация>
  <ОбщиеСвойстваОбъектовФормата><Комментарий>ключевой клиент</Комментарий><Ответственный><Ссылка>u-1</Ссылка><Наименование>Петрова Е.</Наименование></Ответственный></ОбщиеСвойстваОбъектовФормата>
</Справочник.Контрагенты>
<Справочник.Контрагенты>
  <КлючевыеСвойства>
    <Ссылка>4b9f6867-7668-11eb-b762-b13668d09051</Ссылка>
    <Наименование>Петров Пётр Петрович</Наименование>
    <ИНН>500100732259</ИНН>
    <КПП/>
    <ЮридическоеФизическоеЛицо>ФизическоеЛицо</ЮридическоеФизическоеЛицо>
  </КлючевыеСвойства>
  <КонтактнаяИнформация>{ci("ПочтовыйАдрес", "141400, Московская обл., г. Химки, ул. Мира, д. 1, кв. 2")}</КонтактнаяИнформация>
</Справочник.Контрагенты>
<Справочник.Контрагенты>
  <КлючевыеСвойства>
    <Ссылка>4b9f6867-7668-11eb-b762-b13668d09052</Ссылка>
    <Наименование>Без ИНН</Наименование>
    <ИНН/>
    <ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо>
  </КлючевыеСвойства>
  <ГоловнойКонтрагент><Ссылка>4b9f6867-7668-11eb-b762-b13668d09050</Ссылка><Наименование>Вектор</Наименование></ГоловнойКонтрагент>
</Справочник.Контрагенты>
<Справочник.Контрагенты>
  <КлючевыеСвойства>
    <Ссылка>4b9f6867-7668-11eb-b762-b13668d09050</Ссылка>
    <Наименование>Вектор (повтор)</Наименование>
    <ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо>
  </КлючевыеСвойства>
</Справочник.Контрагенты>
<Документ.ЗаказКлиента>
  <КлючевыеСвойства><Ссылка>doc-0001</Ссылка><Дата>2024-01-31T10:00:00</Дата><Номер>00-000001</Номер>
    <Организация><Ссылка>org-1</Ссылка><Наименование>Наша фирма</Наименование></Организация></КлючевыеСвойства>
  <Валюта><Ссылка>cur-1</Ссылка><Код>643</Код><Наименование>руб.</Наименование></Валюта>
  <Сумма>1500.00</Сумма>
  <Контрагент><Ссылка>4b9f6867-7668-11eb-b762-b13668d09050</Ссылка><Наименование>Вектор</Наименование><ИНН>7707083893</ИНН><КПП>773601001</КПП><ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо></Контрагент>
  <АдресДоставки><ЗначенияПолей>{escape('<КонтактнаяИнформация xmlns="http://www.v8.1c.ru/ssl/contactinfo" Представление="г. Москва, Складская ул., д. 3"/>')}</ЗначенияПолей></АдресДоставки>
  <Товары>
    <Строка><Номенклатура><Ссылка>n-1</Ссылка><Наименование>Кирпич</Наименование><Артикул>A-1</Артикул></Номенклатура>
      <ЕдиницаИзмерения><Ссылка>u-796</Ссылка><Код>796</Код><Наименование>шт</Наименование></ЕдиницаИзмерения>
      <Количество>2</Количество><Цена>600</Цена><Сумма>1200.00</Сумма><СтавкаНДС>НДС20</СтавкаНДС><СуммаНДС>200.00</СуммаНДС></Строка>
  </Товары>
  <Услуги>
    <Строка><Номенклатура><Ссылка>n-2</Ссылка><Наименование>Доставка</Наименование></Номенклатура><Количество>1</Количество><Цена>300</Цена><Сумма>300.00</Сумма></Строка>
  </Услуги>
</Документ.ЗаказКлиента>
<Документ.РеализацияТоваровУслуг>
  <КлючевыеСвойства><Ссылка>doc-0002</Ссылка><Дата>2024-02-01</Дата><Номер>00-000002</Номер></КлючевыеСвойства>
  <Сумма>700</Сумма>
  <Контрагент><Ссылка>7a000000-0000-11eb-b762-000000000077</Ссылка><Наименование>Розница Плюс</Наименование><ИНН>7810000001</ИНН><ЮридическоеФизическоеЛицо>ЮридическоеЛицо</ЮридическоеФизическоеЛицо></Контрагент>
</Документ.РеализацияТоваровУслуг>
<Документ.РеализацияТоваровУслуг>
  <КлючевыеСвойства><Ссылка>doc-0003</Ссылка><Дата>2024-02-30T00:00:00</Дата><Номер>00-000003</Номер></КлючевыеСвойства>
  <Сумма>1</Сумма>
  <Контрагент><Ссылка>7a000000-0000-11eb-b762-000000000077</Ссылка><Наименование>Розница Плюс</Наименование></Контрагент>
</Документ.РеализацияТоваровУслуг>
</Body>
</Message>
"""


@pytest.fixture
def cml_cp1251(tmp_path: Path) -> tuple[Path, str]:
    text = cml_2_10_counterparties()
    return write(tmp_path / "cml" / "contragents.xml", text, encoding="cp1251"), text


@pytest.fixture
def cml_orders(tmp_path: Path) -> tuple[Path, str]:
    text = cml_2_08_orders()
    return write(tmp_path / "cml" / "orders.xml", text, bom=True), text


@pytest.fixture
def ed_file(tmp_path: Path) -> tuple[Path, str]:
    text = ed_message("1.21")
    return write(tmp_path / "ed" / "message_1_21.xml", text, bom=True), text


# --- CommerceML --------------------------------------------------------------------------------------------

V1, V2, V3 = (f"0a1b2c3d-0000-11eb-b762-00000000000{i}" for i in (1, 2, 3))


def test_commerceml_2_10_counterparties_in_windows_1251(tmp_path, cml_cp1251) -> None:
    path, text = cml_cp1251
    src = CommerceMLSource("cml/*.xml", base_dir=tmp_path, kind="counterparties")
    src.check()
    assert src.columns() == CML_COLUMNS["counterparties"]
    batches, rows, rejects = read_all(src)
    keys = [r["key"] for r in rows]
    # the list first (the duplicate too: the engine reports it), then the embedded buyer the list did not have;
    # Вектор inside order 77 and Петров in order 78 again are references, read once per file
    assert keys == [V1, V2, V3, "inn:7710140679:771001001", V1, "12#petrov#Петров Пётр"]
    vektor, ivanov, sidorova, alfa, dup, petrov = rows
    assert vektor == {
        "key": V1, "id": V1, "name": "Вектор", "full_name": 'ООО "Вектор"', "type": "company",
        "inn": "7707083893", "kpp": "773601001", "ogrn": None, "okpo": "12345678", "last_name": None,
        "first_name": None, "middle_name": None, "birth_date": None, "gender": None,
        "address": "г. Москва, ул. Льва Толстого, д. 16",
        "legal_address": "119021, Москва, ул. Тимура Фрунзе, 11",  # Представление was ",": made of the fields
        "actual_address": "г. Москва, ул. Льва Толстого, д. 16", "postal_address": None,
        "phone": "+7 495 739-70-00; +7 916 000-00-01", "fax": "+7 495 739-70-01", "email": "info@vektor.example",
        "web": "vektor.example", "other_contacts": "Skype: vektor.office", "role": None, "comment": None,
        "responsible": None, "parent_key": None, "deleted": "false", "version": "2.10",
        FILE_COLUMN: "cml/contragents.xml", LINE_COLUMN: line_of(text, "<Контрагент>"),
    }
    assert pick(ivanov, "type", "inn", "kpp", "last_name", "first_name", "middle_name", "birth_date", "gender",
                "legal_address", "address", "email") == {
        "type": "person", "inn": "500100732259", "kpp": None, "last_name": "Иванов", "first_name": "Иван",
        "middle_name": "Иванович", "birth_date": "1980-05-17", "gender": "М",
        "legal_address": "Московская обл., г. Химки, ул. Мира, д. 1, кв. 2",
        "address": "Московская обл., г. Химки, ул. Мира, д. 1, кв. 2", "email": "ivanov@mail.example"}
    # the empty date and empty tags are NULL; the name is split as Фамилия Имя
    assert pick(sidorova, "inn", "birth_date", "address", "phone", "last_name", "first_name") == {
        "inn": None, "birth_date": None, "address": None, "phone": None, "last_name": "Сидорова",
        "first_name": "Анна"}
    assert pick(alfa, "id", "key", "okpo", "full_name") == {
        "id": None, "key": "inn:7710140679:771001001", "okpo": "87654321", "full_name": 'АО "Альфа"'}
    assert dup["name"] == "Вектор (дубль)"
    assert pick(petrov, "id", "name", "role", "type", "last_name", "first_name", "email") == {
        "id": "12#petrov#Петров Пётр", "name": "Петров Пётр", "role": "Плательщик", "type": "person",
        "last_name": "Петров", "first_name": "Пётр", "email": "petrov@site.example"}
    assert petrov[LINE_COLUMN] == line_of(text, "<Ид>12#petrov#")
    # two records cannot be read: named by file, line, element and value
    assert [(r["reason"], r["line"], r["field"], r["value"]) for r in rejects] == [
        ("missing_id", line_of(text, "<Ид/>") - 1, "Ид", None),
        ("bad_date", line_of(text, "<Ид>0a1b2c3d-0000-11eb-b762-000000000007") - 1, "ДатаРождения", "31.02.1980"),
    ]
    assert rejects[0]["message"] == (f"cml/contragents.xml, line {rejects[0]['line']}: Контрагент 'Без реквизитов' "
                                     f"has no Ид and no ИНН: it cannot be identified")
    assert "ДатаРождения: bad date '31.02.1980'" in rejects[1]["message"]
    assert json.loads(rejects[1]["record"])["birth_date"] == "31.02.1980"
    assert batches[-1].cursor["done"] is True
    # the oddities that did not stop a record are reported
    assert any("ЮридическийАдрес/Представление is ','" in w for w in src.warnings)
    assert any("'Skype'" in w for w in src.warnings)


def test_embedded_counterparties_can_be_left_out(tmp_path, cml_cp1251) -> None:
    src = CommerceMLSource("cml/*.xml", base_dir=tmp_path, embedded_counterparties=False)
    _, rows, _ = read_all(src)
    assert "12#petrov#Петров Пётр" not in [r["key"] for r in rows] and len(rows) == 5


def test_the_list_entry_wins_over_an_earlier_document_reference(tmp_path) -> None:
    write(tmp_path / "c.xml", f"""<КоммерческаяИнформация xmlns="{CML2}" ВерсияСхемы="2.09">
<Документ><Ид>o-1</Ид><Контрагенты>
  <Контрагент><Ид>x-1</Ид><Наименование>Омега</Наименование><Роль>Покупатель</Роль></Контрагент>
  <Контрагент><Ид>x-2</Ид><Наименование>Сигма</Наименование><Роль>Покупатель</Роль></Контрагент>
</Контрагенты></Документ>
<Контрагенты>
  <Контрагент><Ид>x-1</Ид><Наименование>Омега</Наименование><ИНН>7736050003</ИНН><КПП>773601001</КПП></Контрагент>
</Контрагенты>
</КоммерческаяИнформация>""")
    rows = read_all(CommerceMLSource("c.xml", base_dir=tmp_path))[1]
    assert [pick(r, "key", "inn", LINE_COLUMN) for r in rows] == [
        {"key": "x-1", "inn": "7736050003", LINE_COLUMN: 7}, {"key": "x-2", "inn": None, LINE_COLUMN: 4}]


def test_commerceml_contact_persons_flat_and_nested(tmp_path, cml_cp1251) -> None:
    path, text = cml_cp1251
    src = CommerceMLSource("cml/contragents.xml", base_dir=tmp_path, kind="contacts")
    _, rows, rejects = read_all(src)
    assert rejects == []
    assert [pick(r, "key", "counterparty_key", "relation", "name", "last_name", "first_name", "middle_name",
                 "email", LINE_COLUMN) for r in rows] == [
        {"key": "rep-1", "counterparty_key": V1, "relation": "Контактное лицо", "name": "Смирнова Ольга Петровна",
         "last_name": "Смирнова", "first_name": "Ольга", "middle_name": "Петровна", "email": None,
         LINE_COLUMN: line_of(text, "<Представитель>")},
        {"key": f"{V1}/Козлов Пётр", "counterparty_key": V1, "relation": "Контактное лицо", "name": "Козлов Пётр",
         "last_name": "Козлов", "first_name": "Пётр", "middle_name": None, "email": "kozlov@vektor.example",
         LINE_COLUMN: line_of(text, "<Представитель>", 2)},
    ]


def test_commerceml_2_08_bitrix_orders_utf8_bom_without_namespace(tmp_path, cml_orders) -> None:
    path, text = cml_orders
    src = CommerceMLSource("cml/orders.xml", base_dir=tmp_path, kind="documents")
    src.check()
    _, rows, rejects = read_all(src)
    assert [r["key"] for r in rows] == ["101", "103"]
    first, third = rows
    assert first == {
        "key": "101", "id": "101", "number": "101", "date": "2024-02-29T15:19:27", "operation": "Заказ товара",
        "role": "Продавец", "currency": "руб", "currency_code": None, "rate": "1", "amount": "1500.50",
        "comment": "Позвонить за час", "counterparty_key": "5#ivanov#Иван Иванов", "counterparty_id":
        "5#ivanov#Иван Иванов", "counterparty_name": "Иван Иванов", "counterparty_inn": None,
        "counterparty_kpp": None, "counterparty_role": "Покупатель", "organization": None, "number_1c": None,
        "date_1c": None, "status": "[N] Принят", "status_id": None, "status_changed_at": "2024-03-01T09:00:00",
        "paid": "false", "posted": None, "cancelled": "false", "shipped_at": None,
        "payment_method": "Наличный расчет", "delivery_address": "420111, г. Казань, ул. Баумана, д. 5",
        "responsible": None,
        "attributes": json.dumps({"Метод оплаты": "Наличный расчет", "Заказ оплачен": "false", "Отменен": "false",
                                  "Статус заказа": "[N] Принят", "Дата изменения статуса": "2024-03-01 09:00:00",
                                  "Адрес доставки": "420111, г. Казань, ул. Баумана, д. 5"}, ensure_ascii=False),
        "version": "2.08", FILE_COLUMN: "cml/orders.xml", LINE_COLUMN: line_of(text, "<Документ>"),
    }
    # the empty date is NULL; a document without counterparties is still an order
    assert pick(third, "date", "counterparty_key", "posted", "shipped_at") == {
        "date": None, "counterparty_key": None, "posted": "true", "shipped_at": "2024-03-02T12:00:00"}
    assert [(r["reason"], r["line"], r["field"], r["value"]) for r in rejects] == [
        ("bad_number", line_of(text, "<Документ>", 2), "Сумма", "1 500,00"),
        ("missing_id", line_of(text, "<Документ>", 4), "Ид", None),
    ]
    assert rejects[0]["message"] == (f"cml/orders.xml, line {line_of(text, '<Документ>', 2)}: Документ 102: "
                                     f"Сумма: bad number '1 500,00'")


def test_commerceml_order_lines(tmp_path, cml_orders) -> None:
    path, text = cml_orders
    src = CommerceMLSource("cml/orders.xml", base_dir=tmp_path, kind="document_items")
    _, rows, rejects = read_all(src)
    assert [pick(r, "key", "document_key", "line_no", "item_id", "article", "name", "unit", "quantity", "price",
                 "amount") for r in rows] == [
        {"key": "101/1", "document_key": "101", "line_no": "1", "item_id": "good-1", "article": "A-1",
         "name": "Кирпич облицовочный", "unit": "шт", "quantity": "2", "price": "750.25", "amount": "1500.50"},
        {"key": "101/2", "document_key": "101", "line_no": "2", "item_id": "ORDER_DELIVERY", "article": None,
         "name": "Доставка заказа", "unit": "Штука", "quantity": "1", "price": "0", "amount": "0"},
    ]
    assert [(r["reason"], r["line"], r["field"], r["value"]) for r in rejects] == [
        ("bad_number", line_of(text, "<Ид>good-2") - 1, "Количество", "два"),
        ("missing_id", line_of(text, "<Товар><Ид>good-1</Ид><Наименование>Кирпич</Наименование>"), "Ид", None),
    ]


def test_commerceml_3_1_containers_and_nested_representatives(tmp_path) -> None:
    text = cml_3_1_orders()
    write(tmp_path / "b.xml", text, bom=True)
    docs = read_all(CommerceMLSource("b.xml", base_dir=tmp_path, kind="documents"))[1]
    assert [pick(r, "key", "date", "amount", "counterparty_key", "counterparty_inn", "version") for r in docs] == [
        {"key": "b-5001", "date": "2024-03-05", "amount": "2400.00", "counterparty_key": "bx-company-9",
         "counterparty_inn": "5408131553", "version": "3.1"},
        {"key": "b-5002", "date": "2024-03-06T11:30:00", "amount": "100", "counterparty_key": "bx-company-9",
         "counterparty_inn": None, "version": "3.1"},
    ]
    items = read_all(CommerceMLSource("b.xml", base_dir=tmp_path, kind="document_items"))[1]
    assert [pick(r, "key", "vat_rate", "vat_amount") for r in items] == [
        {"key": "b-5001/1", "vat_rate": "20", "vat_amount": "400.00"}]
    # only embedded counterparties in this file: each once, with the contact person of the first occurrence
    cps = read_all(CommerceMLSource("b.xml", base_dir=tmp_path))[1]
    assert [pick(r, "key", "type", "inn", "kpp", "address") for r in cps] == [
        {"key": "bx-company-9", "type": "company", "inn": "5408131553", "kpp": "540801001",
         "address": "630090, Новосибирск, Академгородок"}]
    contacts = read_all(CommerceMLSource("b.xml", base_dir=tmp_path, kind="contacts"))[1]
    assert [pick(r, "key", "counterparty_key", "name", "phone") for r in contacts] == [
        {"key": "bx-contact-31", "counterparty_key": "bx-company-9", "name": "Орлова Мария Сергеевна",
         "phone": "+7 383 000-00-31"}]


def test_counterparty_list_right_under_the_root_2_09(tmp_path) -> None:
    write(tmp_path / "c.xml", f"""<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация xmlns="{CML2}" ВерсияСхемы="2.09" ДатаФормирования="2024-01-01T00:00:00">
<Контрагенты СодержитТолькоИзменения="true">
<Контрагент><Ид>x-1</Ид><Наименование>Омега</Наименование><Роль>Покупатель</Роль><ИНН>7736050003</ИНН><КПП/></Контрагент>
</Контрагенты>
</КоммерческаяИнформация>""")
    rows = read_all(CommerceMLSource("c.xml", base_dir=tmp_path))[1]
    assert [pick(r, "key", "inn", "kpp", "type", "version", LINE_COLUMN) for r in rows] == [
        {"key": "x-1", "inn": "7736050003", "kpp": None, "type": "company", "version": "2.09", LINE_COLUMN: 4}]


def test_an_unknown_namespace_is_read_by_local_names_with_a_warning(tmp_path, caplog) -> None:
    write(tmp_path / "c.xml", """<КоммерческаяИнформация xmlns="urn:example:other" ВерсияСхемы="2.04">
<Классификатор><Контрагенты><Контрагент><Ид>1</Ид><Наименование>Бета</Наименование></Контрагент></Контрагенты></Классификатор>
</КоммерческаяИнформация>""")
    src = CommerceMLSource("c.xml", base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="connectors.onec.xml"):
        rows = read_all(src)[1]
    assert [r["name"] for r in rows] == ["Бета"]
    assert src.warnings == ["c.xml: unknown CommerceML namespace 'urn:example:other': read by local names anyway "
                            "(line 1)"]
    assert src.warnings[0] in caplog.text


def test_an_enterprisedata_file_is_not_commerceml(tmp_path, ed_file) -> None:
    src = CommerceMLSource("ed/*.xml", base_dir=tmp_path)
    with pytest.raises(BadInputError, match=r"ed/message_1_21.xml, line 2: not a CommerceML file: the root element "
                                            r"is <Message>"):
        src.check()


# --- EnterpriseData ----------------------------------------------------------------------------------------

E0, E1, E2 = (f"4b9f6867-7668-11eb-b762-b13668d0905{i}" for i in range(3))
E77 = "7a000000-0000-11eb-b762-000000000077"


def test_enterprisedata_1_21_counterparties_with_contact_information(tmp_path, ed_file) -> None:
    path, text = ed_file
    src = EnterpriseDataSource("ed/*.xml", base_dir=tmp_path)
    src.check()
    assert src.columns() == CML_COLUMNS["counterparties"]  # the same columns as CommerceML's
    _, rows, rejects = read_all(src)
    assert rejects == []
    assert [r["key"] for r in rows] == [E0, E1, E2, E0, E77]  # the list (duplicate included), then a new buyer
    vektor, petrov, no_inn, dup, retail = rows
    assert vektor == {
        "key": E0, "id": E0, "name": "Вектор", "full_name": 'ООО "Вектор"', "type": "company", "inn": "7707083893",
        "kpp": "773601001", "ogrn": "1027700132195", "okpo": "12345678", "last_name": None, "first_name": None,
        "middle_name": None, "birth_date": None, "gender": None, "address": "г. Москва, ул. Льва Толстого, д. 16",
        "legal_address": '119021, г. Москва, ул. Тимура Фрунзе, д. 11, стр. "Б"',
        "actual_address": "г. Москва, ул. Льва Толстого, д. 16", "postal_address": None,
        "phone": "+7 (495) 739-70-00; +7 (495) 739-70-02", "fax": None, "email": "info@vektor.example",
        "web": "vektor.example", "other_contacts": None, "role": None, "comment": "ключевой клиент",
        "responsible": "Петрова Е.", "parent_key": None, "deleted": None, "version": "1.21",
        FILE_COLUMN: "ed/message_1_21.xml", LINE_COLUMN: line_of(text, "<Справочник.Контрагенты>"),
    }
    assert pick(petrov, "type", "last_name", "first_name", "middle_name", "kpp", "address", "postal_address") == {
        "type": "person", "last_name": "Петров", "first_name": "Пётр", "middle_name": "Петрович", "kpp": None,
        "address": "141400, Московская обл., г. Химки, ул. Мира, д. 1, кв. 2",
        "postal_address": "141400, Московская обл., г. Химки, ул. Мира, д. 1, кв. 2"}
    assert pick(no_inn, "inn", "parent_key") == {"inn": None, "parent_key": E0}
    assert dup["name"] == "Вектор (повтор)"
    assert pick(retail, "name", "inn", "type", LINE_COLUMN) == {
        "name": "Розница Плюс", "inn": "7810000001", "type": "company",
        LINE_COLUMN: line_of(text, f"<Контрагент><Ссылка>{E77}")}
    assert any("ЗначенияПолей is not XML with a Представление: the value is taken from its Представление= line" in w
               for w in src.warnings)


def test_enterprisedata_1_8_without_namespaces_in_windows_1251(tmp_path) -> None:
    text = ed_message("1.8", namespaces=False, encoding="windows-1251")
    write(tmp_path / "m.xml", text, encoding="cp1251")
    rows = read_all(EnterpriseDataSource("m.xml", base_dir=tmp_path))[1]
    assert [(r["key"], r["name"], r["version"]) for r in rows] == [
        (E0, "Вектор", "1.8"), (E1, "Петров Пётр Петрович", "1.8"), (E2, "Без ИНН", "1.8"),
        (E0, "Вектор (повтор)", "1.8"), (E77, "Розница Плюс", "1.8")]
    assert rows[0]["legal_address"] == '119021, г. Москва, ул. Тимура Фрунзе, д. 11, стр. "Б"'


def test_enterprisedata_version_from_the_body_namespace_without_a_format(tmp_path) -> None:
    text = ed_message("1.10").replace("<msg:Format>http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.10</msg:Format>",
                                      "<msg:Format>http://v8.1c.ru/edi/edi_stnd/EnterpriseData</msg:Format>")
    write(tmp_path / "m.xml", text)
    rows = read_all(EnterpriseDataSource("m.xml", base_dir=tmp_path))[1]
    assert {r["version"] for r in rows} == {"1.10"}


def test_enterprisedata_documents_and_their_lines(tmp_path, ed_file) -> None:
    path, text = ed_file
    _, docs, rejects = read_all(EnterpriseDataSource("ed/*.xml", base_dir=tmp_path, kind="documents"))
    assert [pick(r, "key", "number", "date", "operation", "currency", "currency_code", "amount", "counterparty_key",
                 "counterparty_inn", "organization", "delivery_address") for r in docs] == [
        {"key": "doc-0001", "number": "00-000001", "date": "2024-01-31T10:00:00", "operation": "ЗаказКлиента",
         "currency": "руб.", "currency_code": "643", "amount": "1500.00", "counterparty_key": E0,
         "counterparty_inn": "7707083893", "organization": "Наша фирма",
         "delivery_address": "г. Москва, Складская ул., д. 3"},
        {"key": "doc-0002", "number": "00-000002", "date": "2024-02-01", "operation": "РеализацияТоваровУслуг",
         "currency": None, "currency_code": None, "amount": "700", "counterparty_key": E77,
         "counterparty_inn": "7810000001", "organization": None, "delivery_address": None},
    ]
    assert [(r["reason"], r["line"], r["field"], r["value"]) for r in rejects] == [
        ("bad_date", line_of(text, "<Документ.РеализацияТоваровУслуг>", 2), "Дата", "2024-02-30T00:00:00")]
    _, items, _ = read_all(EnterpriseDataSource("ed/*.xml", base_dir=tmp_path, kind="document_items"))
    assert [pick(r, "key", "section", "item_id", "article", "name", "unit", "quantity", "price", "amount", "vat_rate",
                 "vat_amount") for r in items] == [
        {"key": "doc-0001/1", "section": "Товары", "item_id": "n-1", "article": "A-1", "name": "Кирпич",
         "unit": "шт", "quantity": "2", "price": "600", "amount": "1200.00", "vat_rate": "НДС20",
         "vat_amount": "200.00"},
        {"key": "doc-0001/2", "section": "Услуги", "item_id": "n-2", "article": None, "name": "Доставка",
         "unit": None, "quantity": "1", "price": "300", "amount": "300.00", "vat_rate": None, "vat_amount": None},
    ]


def test_contact_information_values() -> None:
    inner = '<КонтактнаяИнформация xmlns="http://www.v8.1c.ru/ssl/contactinfo" Представление=" г. Тверь "/>'
    assert contact_info_value(inner, None) == ("г. Тверь", "presentation")
    assert contact_info_value('<ContactInformation Presentation="x@y.example"/>', None) == ("x@y.example",
                                                                                           "presentation")
    email = '<КонтактнаяИнформация><Состав Значение="a@b.example"/></КонтактнаяИнформация>'
    assert contact_info_value(email, None) == ("a@b.example", "value_attribute")
    assert contact_info_value("<broken", "резерв") == ("резерв", "value")
    assert contact_info_value("<broken", None) == (None, "unreadable")
    assert contact_info_value("Индекс=101000\nПредставление=101000, Москва", None) == ("101000, Москва", "key_value")
    # an entity declaration inside ЗначенияПолей is refused like in a file: never expanded
    attack = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><КонтактнаяИнформация Представление="&a;"/>'
    assert contact_info_value(attack, None) == (None, "unreadable")


# --- bad files ---------------------------------------------------------------------------------------------


def test_malformed_xml_names_file_and_line(tmp_path) -> None:
    text = cml_2_10_counterparties().replace("<Наименование>Альфа</Наименование>", "<Наименование>Альфа")
    write(tmp_path / "cml" / "broken.xml", text, encoding="cp1251")
    src = CommerceMLSource("cml/broken.xml", base_dir=tmp_path)
    gen = src.read(None, 2)
    first = next(gen)  # what comes before the break is read
    assert first.table.num_rows == 2
    with pytest.raises(BadInputError) as e:
        list(gen)
    bad_line = line_of(text, "<ОКПО>87654321") + 2  # </Контрагент> while <Наименование> is open
    assert str(e.value).startswith(f"cml/broken.xml, line {bad_line}, column ")
    assert "malformed XML: mismatched tag" in str(e.value)
    assert e.value.file == "cml/broken.xml" and e.value.offset > 0


def test_an_unclosed_root_is_malformed_at_the_end(tmp_path) -> None:
    write(tmp_path / "c.xml", f'<КоммерческаяИнформация xmlns="{CML2}" ВерсияСхемы="2.10">\n<Контрагенты>\n')
    with pytest.raises(BadInputError, match=r"^c.xml, line 3, column 1: malformed XML: no element found"):
        read_all(CommerceMLSource("c.xml", base_dir=tmp_path))


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE КоммерческаяИнформация [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<КоммерческаяИнформация ВерсияСхемы="2.10"><Контрагенты><Контрагент><Ид>1</Ид><Наименование>&lol9;</Наименование></Контрагент></Контрагенты></КоммерческаяИнформация>
"""


def test_entity_expansion_is_refused(tmp_path) -> None:
    write(tmp_path / "lol.xml", BILLION_LAUGHS)
    src = CommerceMLSource("lol.xml", base_dir=tmp_path)
    with pytest.raises(BadInputError, match=r"^lol.xml, line 3: unsafe XML refused: an entity declaration "
                                            r"\(<!ENTITY lol \.\.\.>\)") as e:
        read_all(src)
    assert e.value.file == "lol.xml"
    with pytest.raises(BadInputError, match="unsafe XML refused"):
        src.check()


def test_external_entities_are_refused_and_never_read(tmp_path) -> None:
    secret = write(tmp_path / "secret.txt", "TOP-SECRET-VALUE")
    write(tmp_path / "ext.xml", f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Message [<!ENTITY xxe SYSTEM "file://{secret}">]>
<Message><Body><Справочник.Контрагенты><КлючевыеСвойства><Ссылка>1</Ссылка><Наименование>&xxe;</Наименование>
</КлючевыеСвойства></Справочник.Контрагенты></Body></Message>
""")
    with pytest.raises(BadInputError) as e:
        read_all(EnterpriseDataSource("ext.xml", base_dir=tmp_path))
    assert str(e.value).startswith("ext.xml, line 2: unsafe XML refused")
    assert "TOP-SECRET-VALUE" not in str(e.value)


def test_utf8_declared_but_windows_1251_written_says_so(tmp_path) -> None:
    text = cml_2_10_counterparties().replace('encoding="windows-1251"', 'encoding="UTF-8"')
    write(tmp_path / "c.xml", text, encoding="cp1251")
    with pytest.raises(BadInputError, match=r"^c.xml, line 2, column \d+: malformed XML: not well-formed "
                                            r"\(invalid token\) \(the bytes here are not UTF-8"):
        read_all(CommerceMLSource("c.xml", base_dir=tmp_path))
    # told the truth, the source reads it
    rows = read_all(CommerceMLSource("c.xml", base_dir=tmp_path, encoding="windows-1251"))[1]
    assert rows[0]["name"] == "Вектор"


def test_a_bom_wins_over_a_declaration_that_says_otherwise(tmp_path) -> None:
    write(tmp_path / "c.xml", cml_2_10_counterparties(), bom=True)  # UTF-8 + BOM, declared windows-1251
    rows = read_all(CommerceMLSource("c.xml", base_dir=tmp_path))[1]
    assert rows[0]["full_name"] == 'ООО "Вектор"'


def test_config_errors_are_terminal(tmp_path) -> None:
    with pytest.raises(TerminalError, match="unknown kind 'deals'"):
        CommerceMLSource("*.xml", base_dir=tmp_path, kind="deals")
    with pytest.raises(TerminalError, match="no file matches"):
        CommerceMLSource("*.xml", base_dir=tmp_path).check()


# --- values ------------------------------------------------------------------------------------------------


def test_events_carry_local_names_and_lines(tmp_path) -> None:
    path = write(tmp_path / "e.xml", '<?xml version="1.0"?>\n<a:Root xmlns:a="urn:x" a:attr="1">\n <b xmlns="urn:y">'
                                     "\n  <c/>\n </b>\n</a:Root>\n")
    starts = [(el.tag, el.line, dict(el.attrib)) for ev, el in iter_events(path) if ev == "start"]
    assert starts == [("Root", 2, {"attr": "1"}), ("b", 3, {}), ("c", 4, {})]


def test_values_as_1c_writes_them() -> None:
    assert norm_date("2007-10-30") == "2007-10-30"  # a bare date where a dateTime is due
    assert norm_date("2007-10-30 15:19:27") == "2007-10-30T15:19:27"
    assert norm_date("2024-01-31T09:00:00.123+03:00") == "2024-01-31T09:00:00"
    assert norm_date("2024-02-29", "7:05:00") == "2024-02-29T07:05:00"
    assert norm_date("05.03.2021 9:07:00") == "2021-03-05T09:07:00"
    for empty in ("0001-01-01T00:00:00", "01.01.0001 0:00:00", "0001-01-01", "  ", None):
        assert norm_date(empty) is None
    for bad in ("31.02.2020", "2020-13-01", "завтра", "2020-01-01T25:00:00"):
        with pytest.raises(BadValue):
            norm_date(bad)
    assert [norm_number(v) for v in ("1500.50", " +3 ", "-0.5", None)] == ["1500.50", "3", "-0.5", None]
    for bad in ("1 500,00", "1,5", "12.3.4"):
        with pytest.raises(BadValue):
            norm_number(bad)
    assert split_fio("Иванов Иван Иванович") == ("Иванов", "Иван", "Иванович")
    assert split_fio("ООО Ромашка") == (None, None, None)
    assert split_fio("Римский-Корсаков Николай") == ("Римский-Корсаков", "Николай", None)


# --- resume, batches, memory -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["counterparties", "contacts", "documents", "document_items"])
def test_resume_from_every_cursor_gives_exactly_the_rest(tmp_path, kind) -> None:
    # two files: the list with documents (two phases for counterparties), and the orders
    write(tmp_path / "x" / "a.xml", cml_2_10_counterparties(), encoding="cp1251")
    write(tmp_path / "x" / "b.xml", cml_2_08_orders(), bom=True)
    write(tmp_path / "x" / "c.xml", cml_3_1_orders())
    src = CommerceMLSource("x/*.xml", base_dir=tmp_path, kind=kind)

    def items(batches):
        return [("row", r[FILE_COLUMN], r[LINE_COLUMN], r["key"]) for b in batches for r in b.table.to_pylist()] + [
            ("reject", r["file"], r["line"], r["reason"]) for b in batches for r in b.rejects.to_pylist()]

    whole = list(src.read(None, 1))
    everything = items(whole)
    assert everything and all(b.read_count == 1 for b in whole)
    for i, b in enumerate(whole):
        rest = list(src.read(b.cursor, 2))
        assert sorted(items(rest)) == sorted(items(whole[i + 1:])), (i, b.cursor)
        assert all(r.read_count <= 2 for r in rest)
    assert whole[-1].cursor["done"] and list(src.read(whole[-1].cursor, 5)) == []


def test_a_cursor_mid_document_resumes_inside_it(tmp_path, cml_orders) -> None:
    src = CommerceMLSource("cml/orders.xml", base_dir=tmp_path, kind="document_items")
    first = next(src.read(None, 1))
    assert first.cursor["phase"] == "documents" and first.cursor["unit"] == 0 and first.cursor["sub"] == 1
    _, rows, rejects = read_all(src, first.cursor)
    assert [r["key"] for r in rows] == ["101/2"] and len(rejects) == 2


def test_memory_stays_flat_elements_are_dropped_as_they_end(tmp_path) -> None:
    n = 3000
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<КоммерческаяИнформация xmlns="{CML2}" ВерсияСхемы="2.10">'
             f"<Классификатор><Контрагенты>\n"]
    for i in range(n):
        parts.append(f"<Контрагент><Ид>id-{i}</Ид><Наименование>Компания {i}</Наименование><РеквизитыЮрЛица>"
                     f"<ОфициальноеНаименование>ООО Компания {i}</ОфициальноеНаименование><ИНН>{7700000000 + i}</ИНН>"
                     f"<КПП>770101001</КПП></РеквизитыЮрЛица><Адрес><Представление>г. Москва, д. {i}</Представление>"
                     f"</Адрес><Контакты><Контакт><Тип>Почта</Тип><Значение>c{i}@example.ru</Значение></Контакт>"
                     f"</Контакты></Контрагент>\n")
        if i % 100 == 0:  # a document now and then, with its buyer and lines: the documents pass walks them too
            parts.append(f"<Документ><Ид>d-{i}</Ид><Контрагенты><Контрагент><Ид>buyer-{i}</Ид><Наименование>"
                         f"Покупатель</Наименование></Контрагент></Контрагенты><Товары>"
                         + "<Товар><Ид>g</Ид><Количество>1</Количество></Товар>" * 20 + "</Товары></Документ>\n")
    parts.append("</Контрагенты></Классификатор></КоммерческаяИнформация>\n")
    write(tmp_path / "big.xml", "".join(parts))
    src = CommerceMLSource("big.xml", base_dir=tmp_path)
    live = []
    count = 0
    gc.collect()
    for batch in src.read(None, 400):
        count += batch.table.num_rows
        live.append(sum(1 for o in gc.get_objects() if type(o) is Element))
    assert count == n + n // 100
    # the file has ~70 elements per counterparty (over 200,000 in all); at any batch only the path to the record in
    # hand and the parser's current chunk are alive
    assert len(live) > 5 and max(live) < 600, live


# --- through the CLI ---------------------------------------------------------------------------------------


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    write(root / "data" / "cml" / "contragents.xml", cml_2_10_counterparties(), encoding="cp1251")
    write(root / "data" / "cml" / "orders.xml", cml_2_08_orders(), bom=True)
    write(root / "data" / "ed" / "message.xml", ed_message("1.21"), bom=True)
    (root / "pipelines.yaml").write_text("""version: 1
name: 1c-xml
defaults: {batch_size: 3, max_reject_rate: 0.5}
sources:
  cml: {type: commerceml, dir: data/cml, files: "*.xml"}
  ed: {type: enterprisedata, dir: data/ed, files: "*.xml"}
targets:
  warehouse: {type: sql, url: "sqlite:///.etl/warehouse.db"}
target: warehouse
pipelines: [companies_cml, companies_ed, contacts_cml, deals_cml]
""", encoding="utf-8")
    companies = """entity: company
source: {{use: {src}, kind: counterparties}}
key: key
mapping:
  title: name
  company_type: type
  inn: inn
  kpp: kpp
  ogrn: ogrn
  phone: phone
  email: email
  web: web
  address: address
  comments: comment
"""
    (root / "pipelines" / "companies_cml.yaml").write_text(companies.format(src="cml"), encoding="utf-8")
    (root / "pipelines" / "companies_ed.yaml").write_text(companies.format(src="ed"), encoding="utf-8")
    (root / "pipelines" / "contacts_cml.yaml").write_text("""entity: contact
source: {use: cml, kind: contacts}
key: key
mapping:
  last_name: last_name
  name: first_name
  second_name: middle_name
  full_name: name
  email: email
links:
  company: {pipeline: companies_cml, column: counterparty_key}
""", encoding="utf-8")
    (root / "pipelines" / "deals_cml.yaml").write_text("""entity: deal
source: {use: cml, kind: documents}
key: key
mapping:
  title: {template: "Заказ {number}"}
  amount: amount
  currency: {column: currency, map: {руб: RUB, RUB: RUB}}
  opened_at: date
  comments: comment
links:
  company: {pipeline: companies_cml, column: counterparty_key}
""", encoding="utf-8")
    return root


def events(output: str) -> list[dict]:
    return [json.loads(x) for x in output.splitlines() if x.startswith("{")]


def finished(output: str) -> dict[str, dict]:
    return {e["pipeline"]: e for e in events(output) if e["event"] == "pipeline_finished"}


def test_cli_loads_counterparties_from_commerceml_and_enterprisedata_into_sql(tmp_path, cli) -> None:
    project = make_project(tmp_path / "p")
    res = cli("validate", "-C", project)
    assert res.exit_code == 0, res.output
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    reports = finished(res.output)
    counts = {n: {k: r[k] for k in ("read", "created", "rejected")} for n, r in reports.items()}
    assert counts == {
        # list: 7 + embedded: Петров (contragents.xml) and Иван Иванов (orders.xml)
        "companies_cml": {"read": 9, "created": 6, "rejected": 3},
        "companies_ed": {"read": 5, "created": 4, "rejected": 1},
        "contacts_cml": {"read": 2, "created": 2, "rejected": 0},
        "deals_cml": {"read": 6, "created": 4, "rejected": 2},
    }
    assert reports["companies_cml"]["reasons"] == {"duplicate_key": 1, "missing_id": 1, "bad_date": 1}
    assert reports["companies_ed"]["reasons"] == {"duplicate_key": 1}
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        cml = c.execute(sa.text("SELECT source_id, title, company_type, inn, kpp, phone, email, address "
                                "FROM companies_cml ORDER BY source_id")).all()
        ed = c.execute(sa.text("SELECT source_id, title, company_type, inn, kpp, ogrn, phone, email, web, address, "
                               "comments FROM companies_ed ORDER BY source_id")).all()
        contacts = c.execute(sa.text("SELECT source_id, last_name, name, second_name, company_id FROM contacts_cml "
                                     "ORDER BY source_id")).all()
        deals = c.execute(sa.text("SELECT source_id, title, amount, currency, substr(opened_at, 1, 19), company_id FROM deals_cml "
                                  "ORDER BY source_id")).all()
    eng.dispose()
    assert [tuple(r) for r in cml] == [
        (V1, "Вектор", "company", "7707083893", "773601001", "+7 495 739-70-00; +7 916 000-00-01",
         "info@vektor.example", "г. Москва, ул. Льва Толстого, д. 16"),
        (V2, "Иванов Иван Иванович", "person", "500100732259", None, None, "ivanov@mail.example",
         "Московская обл., г. Химки, ул. Мира, д. 1, кв. 2"),
        (V3, "Сидорова Анна", "person", None, None, None, None, None),
        ("12#petrov#Петров Пётр", "Петров Пётр", "person", None, None, None, "petrov@site.example", None),
        ("5#ivanov#Иван Иванов", "Иван Иванов", "person", None, None, None, "ivanov@site.example",
         "г. Казань, ул. Баумана, д. 5"),
        ("inn:7710140679:771001001", "Альфа", "company", "7710140679", "771001001", None, None, None),
    ]
    assert [tuple(r) for r in ed] == [
        (E0, "Вектор", "company", "7707083893", "773601001", "1027700132195", "+7 (495) 739-70-00; +7 (495) 739-70-02",
         "info@vektor.example", "vektor.example", "г. Москва, ул. Льва Толстого, д. 16", "ключевой клиент"),
        (E1, "Петров Пётр Петрович", "person", "500100732259", None, None, None, None, None,
         "141400, Московская обл., г. Химки, ул. Мира, д. 1, кв. 2", None),
        (E2, "Без ИНН", "company", None, None, None, None, None, None, None, None),
        (E77, "Розница Плюс", "company", "7810000001", None, None, None, None, None, None, None),
    ]
    assert [tuple(r) for r in contacts] == [
        (f"{V1}/Козлов Пётр", "Козлов", "Пётр", None, V1),
        ("rep-1", "Смирнова", "Ольга", "Петровна", V1),
    ]
    assert [tuple(r) for r in deals] == [
        ("101", "Заказ 101", 1500.5, "RUB", "2024-02-29 15:19:27", "5#ivanov#Иван Иванов"),
        ("103", "Заказ 103", 0.0, "RUB", None, None),
        ("order-77", "Заказ 77", 990.0, "RUB", "2024-02-29 00:00:00", V1),  # the buyer, not the seller
        ("order-78", "Заказ 78", 10.0, "RUB", "2024-03-01 00:00:00", "12#petrov#Петров Пётр"),  # padded Ид
    ]
    res = cli("dlq", "list", "deals_cml", "--json", "--limit", "10", "-C", project)
    letters = [e for e in events(res.output) if e["event"] == "dead_letter"]
    assert sorted((d["reason"], d["source_id"], d["file"], d["field"], d["value"]) for d in letters) == [
        ("bad_number", "102", "orders.xml", "Сумма", "1 500,00"), ("missing_id", None, "orders.xml", "Ид", None)]
    # a second run reads the same files and sends nothing
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    assert all(r["created"] == 0 and r["updated"] == 0 for r in finished(res.output).values())


def test_cli_resumes_a_pass_mid_file(tmp_path, cli) -> None:
    project = make_project(tmp_path / "p")
    res = cli("run", "companies_cml", "--limit", "4", "--batch-size", "2", "--json", "-C", project)
    first = finished(res.output)["companies_cml"]
    assert first["read"] == 4 and not first["pass_complete"]
    status = [e for e in events(cli("status", "--json", "-C", project).output) if e.get("pipeline") == "companies_cml"]
    assert status and status[0]["cursor"]["file"] == "contragents.xml" and status[0]["cursor"]["unit"] == 4
    res = cli("run", "companies_cml", "--json", "-C", project)
    second = finished(res.output)["companies_cml"]
    assert second["resumed"] and second["pass_complete"]
    assert first["read"] + second["read"] == 9
    assert first["created"] + second["created"] == 6
    eng = sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        n, distinct = c.execute(sa.text("SELECT count(*), count(DISTINCT source_id) FROM companies_cml")).one()
    eng.dispose()
    assert n == distinct == 6


def test_cli_validate_names_a_bad_kind(tmp_path, cli) -> None:
    project = make_project(tmp_path / "p")
    path = project / "pipelines" / "contacts_cml.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("kind: contacts", "kind: contact"), encoding="utf-8")
    res = cli("validate", "-C", project)
    assert res.exit_code == 2
    assert "pipelines/contacts_cml.yaml:2" in res.output and "source.kind" in res.output
    assert "did you mean 'contacts'" in res.output


def test_cli_stops_a_pipeline_on_unsafe_or_malformed_xml_naming_file_and_line(tmp_path, cli) -> None:
    project = make_project(tmp_path / "p")
    write(project / "data" / "ed" / "zz_attack.xml", BILLION_LAUGHS.replace("КоммерческаяИнформация", "Message"))
    res = cli("run", "companies_ed", "--json", "-C", project)
    assert res.exit_code == 3, res.output
    r = finished(res.output)["companies_ed"]
    assert r["status"] == "failed"
    assert r["message"].startswith("BadInputError: zz_attack.xml, line 3: unsafe XML refused")
    assert r["read"] == 0  # refused when the source is checked, before anything is read
    # broken further down: what comes before is loaded and committed, then the pipeline stops there
    (project / "data" / "ed" / "zz_attack.xml").write_text("<Message><Body>\n<Справочник.Контрагенты>\n</Body>",
                                                          encoding="utf-8")
    res = cli("run", "companies_ed", "--json", "-C", project)
    assert res.exit_code == 3
    r = finished(res.output)["companies_ed"]
    assert r["message"].startswith("BadInputError: zz_attack.xml, line 3, column 3: malformed XML: mismatched tag")
    assert r["created"] == 4 and not r["pass_complete"]
