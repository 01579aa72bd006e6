"""The operations console: one page at `/` that shows the hub at work and lets an operator act.

The page is plain HTML, one JavaScript module and one stylesheet, served from this package
without authentication (`GET /`, `GET /console/{file}`); nothing is fetched from elsewhere. The
data comes from the admin API: the page asks for an admin key (taken from the address's
`#key=...` fragment or typed into its sign-in form), keeps it in the tab's session storage and
sends it as `Authorization: Bearer` on every call. Every answer carries a Content-Security-Policy
that allows scripts, styles, images and connections from the hub itself only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from tillflow.hub.problems import Problem

router = APIRouter(tags=["console"], include_in_schema=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f4e79"/>'
    '<path d="M3 11h2V7H3zm4 0h2V4H7zm4 0h2V8h-2z" fill="#fff"/></svg>'
)


@cache
def _read(name: str) -> bytes:
    """The packaged file `name` (one of `MEDIA_TYPES`), read once per process."""
    if name == "icon.svg":
        return ICON.encode()
    return resources.files(__package__).joinpath(name).read_bytes()


def _serve(name: str) -> Response:
    return Response(
        _read(name),
        media_type=MEDIA_TYPES[name],
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",
        },
    )


@router.get("/", summary="The operations console")
async def index() -> Response:
    return _serve("index.html")


@router.get("/console/{name}", summary="A file of the operations console")
async def console_file(name: str) -> Response:
    """The console's script, stylesheet or icon; 404 for any other name."""
    if name not in MEDIA_TYPES or name == "index.html":
        raise Problem(404, "Not found", f"the console has no file {name!r}", type_="not-found")
    return _serve(name)
