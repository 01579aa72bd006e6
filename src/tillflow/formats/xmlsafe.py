"""Reading untrusted XML safely and in constant memory: one record element at a time.

XML can make a parser do far more than read: external entities fetch files or URLs (XXE),
nested internal entities expand a few bytes into gigabytes ("billion laughs"), and a huge input
exhausts memory. So an input is refused outright when it carries a document type declaration
(no legitimate POSLog needs one) or grows past a byte limit, and the parser itself resolves no
entities, loads no DTD, touches no network and keeps libxml2's limits on text size and depth.

Records are streamed: the input is fed to a pull parser in chunks, each record element is handed
out as soon as it is complete and is then cleared, together with everything before it, so memory
holds one record however long the input is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from lxml import etree

from tillflow.formats.records import FormatError

CHUNK_BYTES = 64 * 1024
DTD_REFUSED = "DTDs and entities are not accepted"
# A declaration in any of the encodings libxml2 detects on its own (UTF-8 and ASCII supersets,
# UTF-16 and UTF-32 in both byte orders): refused before the parser sees a byte of it.
_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
_FORBIDDEN = tuple(word.encode(enc) for word in ("<!DOCTYPE", "<!ENTITY") for enc in _ENCODINGS)
_OVERLAP = max(len(word) for word in _FORBIDDEN) - 1


def local_name(tag: str) -> str:
    """`Name` of ``{namespace}Name`` (or of a tag without a namespace)."""
    return tag[tag.find("}") + 1 :]


def _hardened_parser(names: tuple[str, ...]) -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("end",),
        tag=names,
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        no_network=True,
        huge_tree=False,
    )


def _chunks(stream: BinaryIO | bytes, max_bytes: int) -> Iterator[bytes]:
    """The input in chunks, refusing a DTD or entity declaration and anything past `max_bytes`."""
    if isinstance(stream, bytes | bytearray | memoryview):
        data = bytes(stream)
        blocks: Iterator[bytes] = (data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES))
    else:
        blocks = iter(lambda: stream.read(CHUNK_BYTES), b"")
    total, tail = 0, b""
    for block in blocks:
        if not isinstance(block, bytes | bytearray):
            raise FormatError("the input must be read as bytes (a binary stream)")
        total += len(block)
        if total > max_bytes:
            raise FormatError(f"the input is larger than the limit of {max_bytes} bytes")
        # every declaration holds a "!" in any encoding: most chunks need no closer look
        if b"!" in block or b"!" in tail:
            window = tail + block
            if any(word in window for word in _FORBIDDEN):
                raise FormatError(DTD_REFUSED)
        tail = block[-_OVERLAP:] if len(block) >= _OVERLAP else (tail + block)[-_OVERLAP:]
        yield bytes(block)


def iter_records(
    stream: BinaryIO | bytes, *, root: str, record: str, namespace: str, max_bytes: int
) -> Iterator[tuple[int, etree._Element]]:
    """Each `record` element directly under the `root` element, with its 1-based position, in
    input order; both names match in `namespace` or in no namespace. The element is cleared once
    the consumer moves on to the next one."""
    parser = _hardened_parser((f"{{{namespace}}}{record}", record))
    index = 0
    checked = False
    try:
        for chunk in _chunks(stream, max_bytes):
            parser.feed(chunk)
            for _, element in parser.read_events():
                if not isinstance(element, etree._Element):
                    continue
                parent = element.getparent()
                if not checked:
                    _check_root(element if parent is None else parent, root)
                    checked = True
                if parent is None or parent.getparent() is not None:
                    continue  # a nested element of the same name: part of an enclosing record
                index += 1
                yield index, element
                element.clear()
                while element.getprevious() is not None:
                    del parent[0]
        document = parser.close()
    except etree.XMLSyntaxError as exc:
        raise FormatError(f"not well-formed XML: {exc.msg or exc}") from None
    except etree.LxmlError as exc:
        raise FormatError(f"unreadable XML: {exc}") from None
    if not checked:
        _check_root(document, root)


def _check_root(element: etree._Element, root: str) -> None:
    tree = element.getroottree()
    info: Any = tree.docinfo  # the stubs lack `doctype`
    if info.doctype or info.internalDTD is not None:
        raise FormatError(DTD_REFUSED)
    top = tree.getroot()
    name = local_name(top.tag) if isinstance(top.tag, str) else ""
    if name != root:
        raise FormatError(f"not a {root} document: the root element is <{name[:40]}>")
