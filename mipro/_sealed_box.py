"""The client side of sealed environment keys, as Synth's SDK does it: libsodium's sealed box
to the server's X25519 key (`GET /api/v1/crypto/public-key`), base64 for `ciphertext_b64`."""

from __future__ import annotations

import base64

import nacl.public


def seal(public_key_b64: str, value: str) -> str:
    """`value` sealed to `public_key_b64` (base64 of 32 bytes), as base64."""
    public_key = nacl.public.PublicKey(base64.b64decode(public_key_b64))
    return base64.b64encode(nacl.public.SealedBox(public_key).encrypt(value.encode())).decode()
