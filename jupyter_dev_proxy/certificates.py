"""Reading a certificate the hub presents, without verifying it: only to name it in a message.

A small DER reader (RFC 5280 §4.1) rather than a dependency: the proxy needs the issuer's name and nothing else.
"""

from __future__ import annotations


def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, content start, content end) of each DER element between ``start`` and ``end``."""
    items = []
    while start < end:
        tag, length, start = data[start], data[start + 1], start + 2
        if length & 0x80:
            count = length & 0x7F
            length, start = int.from_bytes(data[start:start + count], "big"), start + count
        items.append((tag, start, start + length))
        start += length
    return items


_NAME_ATTRIBUTES = {bytes.fromhex("550403"): "CN", bytes.fromhex("55040a"): "O", bytes.fromhex("55040b"): "OU"}


def certificate_issuer(der: bytes) -> str | None:
    """The issuer of a DER certificate as ``CN=..., O=..., OU=...``; None if it cannot be read.

    Certificate → tbsCertificate → [version], serialNumber, signature, **issuer** (RFC 5280 §4.1).
    """
    try:
        (_, cert_start, cert_end), = _der_items(der, 0, len(der))
        _, tbs_start, tbs_end = _der_items(der, cert_start, cert_end)[0]
        fields = _der_items(der, tbs_start, tbs_end)
        _, issuer_start, issuer_end = fields[3] if fields[0][0] == 0xA0 else fields[2]
        parts = []
        for _, set_start, set_end in _der_items(der, issuer_start, issuer_end):
            for _, pair_start, pair_end in _der_items(der, set_start, set_end):
                (_, oid_start, oid_end), (_, value_start, value_end) = _der_items(der, pair_start, pair_end)
                name = _NAME_ATTRIBUTES.get(der[oid_start:oid_end])
                if name:
                    parts.append(f"{name}={der[value_start:value_end].decode('utf-8', 'replace')}")
    except (IndexError, ValueError):
        return None
    return ", ".join(parts) or None
