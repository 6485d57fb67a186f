"""The page's and the API messages' languages: English (the source text) and Korean (the seed's).

Babel is the one door, imported when first needed (a Korean answer, the page's figures): a process
that only answers /metrics and the API in English never loads it; `require_babel` checks at start
that it can be found. The catalogues are gettext `.po` text under `locales/`, compiled in memory
when first used (no `.mo` to build or ship), and numbers and times follow the locale's CLDR data.
http/app.py says which language a request gets (`use`) and asks for texts (`gettext`, `ngettext`);
the templates call `_()` and the figure filters `install` gives them. How to add a string:
docs/architecture.md#languages.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import importlib.util
import io
import re
from decimal import Decimal
from gettext import NullTranslations
from pathlib import Path

from . import formatting
from .answers import N_, WARNINGS, DefaultWarning
from .config import ConfigError
from .risk_answers import RISKS

LANGUAGES = ("en", "ko")
DEFAULT = "en"  # what Ansible, Prometheus and every client that names no language get
NAMES = {"en": "English", "ko": "한국어"}  # the switch names each language in its own words
COOKIE = "lang"  # remembers the page's switch; the API reads Accept-Language only
COOKIE_MAX_AGE = 365 * 86400
LOCALES = Path(__file__).with_name("locales")
AGE_STEPS = ((60, 1), (3600, 60), (86400, 3600))  # (below, unit): whole seconds, minutes, hours, then days

_language = contextvars.ContextVar("language", default=DEFAULT)

# A refresh failure's reason is fixed and translated; its detail (Proxmox's or the DB's words) is kept.
REFRESH_FAILED = {
    "auth": N_("Refresh failed (auth): %(detail)s"),
    "timeout": N_("Refresh failed (timeout): %(detail)s"),
    "connection": N_("Refresh failed (connection): %(detail)s"),
    "http_4xx": N_("Refresh failed (http_4xx): %(detail)s"),
    "http_5xx": N_("Refresh failed (http_5xx): %(detail)s"),
    "parse": N_("Refresh failed (parse): %(detail)s"),
    "db": N_("Refresh failed (db): %(detail)s"),
    "internal": N_("Refresh failed (internal): %(detail)s"),
}
# werkzeug's own sentences for the errors it raises: English answers stay werkzeug's, word for word.
HTTP_MESSAGES = {
    400: N_("The browser (or proxy) sent a request that this server could not understand."),
    404: N_("The requested URL was not found on the server. If you entered the URL manually please check "
            "your spelling and try again."),
    405: N_("The method is not allowed for the requested URL."),
    413: N_("The data value transmitted exceeds the capacity limit."),
}


# -- which language ----------------------------------------------------------------------

def _ranked(header: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first, refused ones (q=0) left out."""
    ranked = []
    for position, item in enumerate(header.split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and 0 < quality <= 1:  # a NaN fails both
            ranked.append((-quality, position, tag.lower()))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(header: str | None) -> str:
    """The language to answer in: the client's most wanted one we speak (ko, ko-KR: Korean), else English."""
    for tag in _ranked(header or ""):
        primary = re.split(r"[-_]", tag)[0]
        if primary in LANGUAGES:
            return primary
        if tag == "*":
            return DEFAULT
    return DEFAULT


def supported(value: str | None) -> str | None:
    """`value` when it names a language we speak, else None."""
    return value if value in LANGUAGES else None


def page_language(asked: str | None, remembered: str | None, header: str | None) -> str:
    """The page's language: the switch's `?lang=`, then its cookie, then Accept-Language."""
    return supported(asked) or supported(remembered) or negotiate(header)


def use(language: str) -> None:
    """Answer the current request in `language`."""
    _language.set(supported(language) or DEFAULT)


def current() -> str:
    """The current request's language."""
    return _language.get()


def require_babel() -> None:
    """ConfigError unless Babel can be found: imported at its first use, its absence must show at start."""
    if importlib.util.find_spec("babel") is None:
        raise ConfigError("Babel is not installed: the page and the Korean answers need it (pip install Babel)")


@functools.cache
def _babel():
    """Babel's dates and numbers modules, imported at the first figure formatted (the page)."""
    from babel import dates, numbers

    return dates, numbers


# -- texts -------------------------------------------------------------------------------

@functools.cache
def translations(language: str) -> NullTranslations:
    """The catalogue of `language`, compiled from its .po text; English is the source text itself."""
    if language == DEFAULT:
        return NullTranslations()  # the stdlib's: English needs no Babel
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out: they fall back to English
    compiled.seek(0)
    return Translations(compiled)


def gettext(message: str, **values) -> str:
    """`message` in the current language, its %(name)s placeholders filled (as the templates' `_()`)."""
    return translations(current()).gettext(message) % values


def translate(language: str, message: str, **values) -> str:
    """`message` in `language`, outside any request's language (the front's own answers)."""
    return translations(supported(language) or DEFAULT).gettext(message) % values


def ngettext(singular: str, plural: str, n: int, **values) -> str:
    """The singular or plural message for `n` in the current language; %(num)d is `n`."""
    return translations(current()).ngettext(singular, plural, n) % {"num": n, **values}


def refresh_failed(reason: str, detail: str) -> str:
    """A failed refresh's message: the reason's sentence, the detail verbatim."""
    if reason in REFRESH_FAILED:
        return gettext(REFRESH_FAILED[reason], detail=detail)
    return gettext("Refresh failed (%(reason)s): %(detail)s", reason=reason, detail=detail)


def http_message(code: int, description: str, default: str) -> str:
    """A werkzeug error's sentence: its default one translated, a specific one kept as it is."""
    if description == default and code in HTTP_MESSAGES:
        return gettext(HTTP_MESSAGES[code])
    return description


def risk(found) -> str:
    """A risk of the per-node reads (risk_answers.RiskNote) in the current language, by its code."""
    return gettext(RISKS[found.code], **found.values)


def warning(found: DefaultWarning) -> str:
    """A warning about the defaults (answers.default_warnings) in the current language, by its code."""
    return gettext(WARNINGS[found.code], **found.values())


# -- figures -----------------------------------------------------------------------------

# The figures below take the request's language unless a `locale` (any CLDR one: "de") is given.

def _localized(text: str, locale: str | None) -> str:
    """A figure of formatting.py with the locale's digits: formatting rounds, Babel writes the number."""
    number, space, unit = text.partition(" ")
    if number == formatting.UNKNOWN:
        return text
    decimals = len(number.partition(".")[2])
    pattern = "0." + "0" * decimals if decimals else "0"
    return _babel()[1].format_decimal(Decimal(number), format=pattern, locale=locale or current()) + space + unit


def iec(value: int | None, locale: str | None = None) -> str:
    """formatting.iec for the locale: "1.50 TiB" (the IEC units stay)."""
    return _localized(formatting.iec(value), locale)


def percent(used: int | None, size: int | None, locale: str | None = None) -> str:
    """formatting.percent for the locale: "45.4 %"."""
    return _localized(formatting.percent(used, size), locale)


def number(value: int, locale: str | None = None) -> str:
    """A count with the locale's grouping."""
    return _babel()[1].format_decimal(value, locale=locale or current())


def ago(seconds: float | None, locale: str | None = None) -> str:
    """An age in whole seconds, minutes, hours or days, said the locale's way ("5 minutes ago", "5분 전")."""
    if seconds is None:
        return gettext("never")
    if seconds < 10:
        return gettext("just now")
    whole, unit = int(seconds), 86400
    for below, length in AGE_STEPS:
        if whole < below:
            unit = length
            break
    # Floored to a whole unit first: Babel rounds, and "1 minute ago" must not be said of 50 s.
    return _babel()[0].format_timedelta(dt.timedelta(seconds=-(whole // unit * unit)), threshold=1, add_direction=True,
                            locale=locale or current())


def moment(iso: str | None, locale: str | None = None) -> str:
    """An ISO 8601 UTC time of the API as the locale writes a date and time, in UTC."""
    if not iso:
        return ""
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return _babel()[0].format_datetime(when, "long", tzinfo=dt.UTC, locale=locale or current())


def install(env) -> None:
    """Give a Jinja environment `_()`/`gettext`/`ngettext` in the request's language, the figure filters
    and the switch's languages."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(lambda message: translations(current()).gettext(message),
                                  lambda singular, plural, n: translations(current()).ngettext(singular, plural, n),
                                  newstyle=True)
    env.filters.update(iec=iec, percent=percent, level=formatting.level, ago=ago, moment=moment, number=number,
                       warning=warning, risk=risk)
    env.globals.update(language=current, languages=NAMES)
