"""moto's S3/SQS server for Twin Matcher's integration tests, with IAM enforced as AWS enforces it.

Started by `twin_tests::moto` (tests/src/moto.rs) with the venv's Python, with the same arguments
as `moto_server` (`-H HOST -p PORT`). Once the tests switch authorization on (moto's
`/moto-api/reset-auth`), moto checks every request against the IAM policies of the caller, but
two kinds of request that AWS accepts then fail inside moto (HTTP 500, seen with moto 5.2.5):

- A CORS preflight (`OPTIONS`), which browsers send without credentials: S3 answers it from the
  bucket's CORS rules alone and never asks for a signature.
- A presigned request (the signature, credential, date, expiry and session token in the query
  string): moto reads the credential from the `Authorization` header only.

It also turns off moto's server-wide CORS headers, which allow any origin on every response.

This launcher makes moto do what S3 does for the first two, and nothing more permissive: the
preflight is answered from the CORS rules as moto does without IAM (a disallowed origin is
refused; for an allowed one it answers the rule's methods and headers, and the browser refuses a
request whose method or headers are not among them), and a presigned request is checked like any
other: the key must exist
(with its session token), the signature must match the query-string SigV4 signature computed
with the key's secret, the URL must not have expired, and the signer's policies must allow the
action on the object.
"""

from __future__ import annotations

import datetime
import os
import sys

# moto's server adds permissive CORS headers (flask-cors, any origin) to every response; S3 sends
# CORS headers only from the bucket's own rules.
os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "1"
from urllib.parse import parse_qsl, quote, urlencode, urlparse

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import S3IAMRequest
from moto.s3.exceptions import S3AccessDeniedError
from moto.utilities.utils import get_partition

_original_s3_check = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action


def _enforced() -> bool:
    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


class _PresignedRequest(S3IAMRequest):
    """An S3 request authenticated by its query string instead of an Authorization header."""

    def __init__(self, responder, query: dict[str, str]):
        self._query = query
        headers = dict(responder.headers)
        token = query.get("X-Amz-Security-Token")
        if token is not None:
            headers["X-Amz-Security-Token"] = token
        # moto's request parses the credential scope and signature from this header.
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={query.get('X-Amz-Credential', '')}, "
            f"SignedHeaders={query.get('X-Amz-SignedHeaders', '')}, "
            f"Signature={query.get('X-Amz-Signature', '')}"
        )
        self._url = f"http://placeholder{responder.raw_path}"
        super().__init__(
            account_id=responder.current_account,
            method=responder.method,
            path=responder.raw_path,
            data=responder.data,
            body=responder.raw_body,
            headers=headers,
            action=responder._get_action(),
        )

    def check_signature(self) -> None:
        q = self._query
        try:
            signed_at = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
            expires = int(q["X-Amz-Expires"])
        except (KeyError, ValueError):
            self._raise_access_denied()
        now = datetime.datetime.now(datetime.timezone.utc)
        if now > signed_at + datetime.timedelta(seconds=expires):
            raise S3AccessDeniedError()
        # The canonical request covers every query parameter but the signature, and the
        # headers the URL says were signed.
        params = [(k, v) for k, v in q.items() if k != "X-Amz-Signature"]
        signed = {h.strip().lower() for h in q.get("X-Amz-SignedHeaders", "").split(";") if h}
        headers = {k: v for k, v in self._headers.items() if k.lower() in signed and k.lower() != "host"}
        host = {k.lower(): v for k, v in self._headers.items()}.get("host")
        url = self._url_with_query(params)
        if host:
            parsed = urlparse(url)
            url = parsed._replace(netloc=host).geturl()
        request = AWSRequest(method=self._method, url=url, headers=headers)
        request.context["timestamp"] = q["X-Amz-Date"]
        credentials = Credentials(
            self._access_key._access_key_id,
            self._access_key._secret_access_key,
            q.get("X-Amz-Security-Token"),
        )
        auth = S3SigV4QueryAuth(credentials, self._service, self._region, expires=expires)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if expected != q.get("X-Amz-Signature"):
            self._raise_signature_does_not_match()

    def _url_with_query(self, params=None) -> str:
        if params is None:
            params = list(self._query.items())
        return f"{self._url}?{urlencode(params, quote_via=quote, safe='-_.~')}"


def _s3_check(self, bucket_name=None, key_name=None):
    if not _enforced():
        return _original_s3_check(self, bucket_name, key_name)
    if self.method == "OPTIONS":
        # A CORS preflight: S3 answers it from the bucket's CORS rules, without credentials.
        return None
    query = dict(parse_qsl(urlparse(self.uri).query, keep_blank_values=True))
    if "Authorization" not in self.headers and "X-Amz-Credential" in query:
        target = f"{bucket_name or '*'}/{key_name}" if key_name else (bucket_name or "*")
        resource = f"arn:{get_partition(self.region)}:s3:::{target}"
        request = _PresignedRequest(self, query)
        request.check_signature()
        request.check_action_permitted(resource)
        return None
    if "Authorization" not in self.headers:
        # Anonymous, or presigned with the retired SigV2 (which the product never uses).
        raise S3AccessDeniedError()
    return _original_s3_check(self, bucket_name, key_name)


ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = _s3_check

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
