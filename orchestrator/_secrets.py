"""Environment keys in transit and at rest: one server key, derived subkeys, PyNaCl boxes.

`MIPRO_SECRETS_KEY` (32 random bytes, base64) is the root secret. Each purpose gets its own
subkey, derived with keyed BLAKE2b and a distinct personalisation (libsodium's `crypto_kdf`
construction), so no two uses share a key:

- the at-rest key: XChaCha20-Poly1305 (`nacl.secret.Aead`), with the key's name as
  associated data, so a ciphertext cannot be moved to another name unnoticed;
- the X25519 key pair of the sealed-box form (`GET /api/v1/crypto/public-key`; clients seal
  with `nacl.public.SealedBox(public_key).encrypt(value)`);
- the HMAC key of the fingerprint a registration answers with (an HMAC, not a plain hash, so
  it does not help anyone guess a short key);
- a public key id, stored beside each ciphertext, naming the server key that sealed it.

Previous server keys (`MIPRO_SECRETS_KEY_PREVIOUS`) still open what they sealed, which is
what rotation needs: the store re-seals every row under the current key when it opens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.secret

#: The `alg` of `GET /api/v1/crypto/public-key`, as Synth's SDK expects it.
SEALED_BOX_ALG = "libsodium.sealedbox.v1"
#: The length of a server key, in bytes.
KEY_BYTES = 32


class SecretsError(ValueError):
    """A ciphertext could not be opened (wrong key, tampered or malformed)."""


def _derive(root: bytes, purpose: bytes) -> bytes:
    return nacl.hash.blake2b(b"", key=root, person=purpose, digest_size=KEY_BYTES,
                             encoder=nacl.encoding.RawEncoder)


@dataclass(frozen=True)
class _ServerKey:
    """The subkeys of one server key."""

    key_id: str
    at_rest: nacl.secret.Aead
    private: nacl.public.PrivateKey
    fingerprint_key: bytes

    @classmethod
    def from_root(cls, root: bytes) -> _ServerKey:
        if len(root) != KEY_BYTES:
            raise ValueError(f"a server key is {KEY_BYTES} bytes, got {len(root)}")
        return cls(
            key_id=_derive(root, b"mipro-key-id").hex()[:16],
            at_rest=nacl.secret.Aead(_derive(root, b"mipro-at-rest")),
            private=nacl.public.PrivateKey.from_seed(_derive(root, b"mipro-sealed-box")),
            fingerprint_key=_derive(root, b"mipro-fingerprnt"),
        )


class EnvKeyVault:
    """Seals and opens environment keys with the current server key and the previous ones."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current = _ServerKey.from_root(current)
        self._by_id = {k.key_id: k for k in
                       (_ServerKey.from_root(p) for p in previous)}
        self._by_id[self._current.key_id] = self._current

    @property
    def current_key_id(self) -> str:
        """The id stored beside ciphertexts the current key sealed."""
        return self._current.key_id

    # -- the sealed-box form (client -> server) ---------------------------------------------

    @property
    def public_key_b64(self) -> str:
        """The base64 X25519 public key clients seal environment keys to."""
        return self._current.private.public_key.encode(nacl.encoding.Base64Encoder).decode()

    def open_sealed(self, ciphertext_b64: str) -> str:
        """The text a client sealed to one of the server's public keys (the current key
        first, then previous ones, so a key fetched just before a rotation still works)."""
        try:
            sealed = base64.b64decode(ciphertext_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SecretsError("is not base64") from None
        for key in (self._current, *self._by_id.values()):
            try:
                plain = nacl.public.SealedBox(key.private).decrypt(sealed)
            except nacl.exceptions.CryptoError:
                continue
            try:
                return plain.decode()
            except UnicodeDecodeError:
                raise SecretsError("does not hold UTF-8 text") from None
        raise SecretsError(
            "cannot be opened: seal the value with libsodium's sealed box to the public key "
            "of GET /api/v1/crypto/public-key")

    # -- at rest ----------------------------------------------------------------------------

    def seal(self, name: str, value: str) -> tuple[str, str]:
        """`(key_id, base64 ciphertext)` of `value` stored under `name`."""
        box = self._current.at_rest.encrypt(value.encode(), name.encode(),
                                            encoder=nacl.encoding.Base64Encoder)
        return self._current.key_id, box.decode()

    def open(self, name: str, key_id: str, ciphertext: str) -> str:
        """The value `seal(name, value)` returned as `(key_id, ciphertext)`."""
        key = self._by_id.get(key_id)
        if key is None:
            raise SecretsError(f"was sealed with server key {key_id}, which is not configured")
        try:
            plain = key.at_rest.decrypt(ciphertext.encode(), name.encode(),
                                        encoder=nacl.encoding.Base64Encoder)
        except (nacl.exceptions.CryptoError, binascii.Error, ValueError):
            raise SecretsError("is tampered or malformed") from None
        return plain.decode()

    # -- what a registration answers --------------------------------------------------------

    def fingerprint(self, owner: str, name: str, value: str) -> str:
        """16 hex digits telling an owner's keys apart; without the server key they say
        nothing about the value (HMAC-SHA256 under a derived subkey)."""
        message = b"\0".join((owner.encode(), name.encode(), value.encode()))
        return hmac.new(self._current.fingerprint_key, message, hashlib.sha256).hexdigest()[:16]


def env_key_id(owner: str, name: str) -> str:
    """The stable public id of an owner's named key (it does not depend on the value)."""
    return "ek_" + hashlib.sha256(f"{owner}\0{name}".encode()).hexdigest()[:16]
