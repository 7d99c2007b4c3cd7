#!/usr/bin/env python3
# Independent check of docs/PROOFS.md §7 with Python's blake3 and cryptography packages.
import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives import serialization
seed = bytes(range(32))
sk = Ed25519PrivateKey.from_private_bytes(seed)
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print("public key", pk.hex())
print("key id", blake3.blake3(pk).hexdigest()[:16])
e1 = bytes.fromhex("7fe66266ca7e44f8aaddc9f187e2dec68b19f049f58ea804beb45107f9fb243a")
e2 = bytes.fromhex("3b62afdee754dc184880451b4d54ae01a6d1f67e5c0d8146fb706ac7d2fdff33")
leaf = lambda e: blake3.blake3(b"\x00" + e).digest()
root = blake3.blake3(b"\x01" + leaf(e1) + leaf(e2)).digest()
print("root", root.hex())
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
key_id = blake3.blake3(pk).hexdigest()[:16].encode()
cp = (b"\x08\x01" + b"\x12\x02" + b"01" + b"\x18\x02" + b"\x22\x20" + root + b"\x28\x02"
      + b"\x32\x20" + e2 + b"\x38" + varint(1767225600003) + b"\x42\x10" + key_id)
print("checkpoint", cp.hex())
sig = sk.sign(b"ansinh/v1/checkpoint\x00" + cp)
print("signature", sig.hex())
Ed25519PublicKey.from_public_bytes(pk).verify(sig, b"ansinh/v1/checkpoint\x00" + cp)
ch = blake3.blake3(b"ansinh/v1/checkpoint-hash\x00" + cp).digest()
print("checkpoint hash", ch.hex())
co = Ed25519PrivateKey.from_private_bytes(bytes([7]*32))
cs = co.sign(b"ansinh/v1/cosignature\x00" + ch + (1767225600004).to_bytes(8, "big", signed=True) + b"audit-office:test")
print("cosignature", cs.hex())
new = Ed25519PrivateKey.from_private_bytes(bytes([9]*32)).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print("rotation signature", sk.sign(b"ansinh/v1/key-rotation\x00" + new).hex())
# Exclusion signatures (docs/CHAIN.md §4a and §5) by the same ledger key: the held
# messages "foreign 1" at stream sequence 5 and "foreign 2" at 6, in partition 01.
m = lambda p: blake3.blake3(b"ansinh/v1/message\x00" + p).digest()
r = lambda prev, seq, mh: blake3.blake3(b"ansinh/v1/excluded-run\x00" + prev + seq.to_bytes(8, "big") + mh).digest()
m5, m6 = m(b"foreign 1"), m(b"foreign 2")
run = r(r(bytes(32), 5, m5), 6, m6)
one = b"ansinh/v1/exclusion\x00" + b"01" + b"\x00" + (5).to_bytes(8, "big") + m5
print("exclusion of one message", sk.sign(one).hex())
both = (b"ansinh/v1/exclusion-run\x00" + b"01" + b"\x00" + (5).to_bytes(8, "big") + m5
        + (6).to_bytes(8, "big") + (2).to_bytes(8, "big") + run)
print("exclusion of the run", sk.sign(both).hex())
