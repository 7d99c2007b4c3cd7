#!/usr/bin/env python3
# Independent check of docs/GATEWAYS.md §4 (the signed gateway post) with Python's blake3
# and cryptography packages; the protobuf is encoded by hand.
import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives import serialization
seed = bytes(range(32, 64))
sk = Ed25519PrivateKey.from_private_bytes(seed)
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print("public key", pk.hex())
print("key id", blake3.blake3(pk).hexdigest()[:16])
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def text(field, s):
    s = s.encode()
    return bytes([field << 3 | 2]) + varint(len(s)) + s
post = (text(1, "vcb") + text(2, "01/pay:17:2026-03:1") + text(3, "settled")
        + text(4, "VCB-20260305-000042") + text(5, "1500000") + text(6, "0100007-000001/m1")
        + bytes([7 << 3]) + varint(1772699400000))  # reason "" is not encoded
print("post", post.hex())
sig = sk.sign(b"ansinh/v1/gateway-post\x00" + post)
print("signature", sig.hex())
Ed25519PublicKey.from_public_bytes(pk).verify(sig, b"ansinh/v1/gateway-post\x00" + post)
