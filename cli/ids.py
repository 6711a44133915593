"""Ids as people type them: the start of a job's, an upload's or a sweep's id (`trainhub show
8c7a`) stands for the whole one when it names exactly one, asked of the API's `id_prefix`
filter."""
import re
from urllib.parse import quote

from cli.client import Api, CliError

FULL_ID = re.compile(r"[0-9a-f]{32}")  # core.ids
PREFIX = re.compile(r"[0-9a-f]{1,31}")
SHOWN = 10  # matches an ambiguous prefix's error lists


class AmbiguousId(CliError):
    """A prefix that starts more than one id."""


def _resolve(api: Api, text: str, kind: str, path: str, key: str, paged: bool) -> str:
    """The id text stands for. A whole id, or what is not hex at all, goes on as it is: the
    API answers it (a missing one is its usual 404). A prefix of no id goes on too, for the
    same 404; a prefix of several is AmbiguousId listing them."""
    prefix = text.strip().lower()
    if FULL_ID.fullmatch(prefix) or not PREFIX.fullmatch(prefix):
        return text
    found = api.get(path, id_prefix=prefix, **({"limit": SHOWN + 1} if paged else {}))
    matches = found[key]
    if not matches:
        return text
    if len(matches) == 1:
        return matches[0]["id"]
    listed = ", ".join(f"{m['id']} ({m['name']})" for m in matches[:SHOWN])
    more = " and more" if len(matches) > SHOWN else ""
    count = f"{SHOWN}+" if more else str(len(matches))
    raise AmbiguousId(f"{kind} id {text!r} starts {count} {kind}s: {listed}{more}; give more "
                      "of its digits")


def job_id(api: Api, text: str) -> str:
    return _resolve(api, text, "job", "/jobs", "jobs", paged=True)


def dataset_id(api: Api, text: str) -> str:
    return _resolve(api, text, "dataset", "/datasets", "datasets", paged=False)


def sweep_id(api: Api, text: str) -> str:
    return _resolve(api, text, "sweep", "/sweeps", "items", paged=True)


def job_path(api: Api, text: str, tail: str = "") -> str:
    """/jobs/<the job text names><tail>, quoted."""
    return f"/jobs/{quote(job_id(api, text), safe='')}{tail}"
