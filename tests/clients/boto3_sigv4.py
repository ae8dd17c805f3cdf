"""boto3 against phone-ledger in strict SigV4 mode: a good credential works and acts as its
account; a wrong secret and an unknown key fail with the error codes AWS uses.

Usage: python3 boto3_sigv4.py ENDPOINT_URL ACCESS_KEY SECRET ACCOUNT
"""
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, key, secret, account = sys.argv[1:5]


def client(access_key, secret_key):
    return boto3.client(
        "pinpoint-sms-voice-v2",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}),
    )


good = client(key, secret)
pool = good.create_pool(
    OriginationIdentity=good.request_phone_number(
        IsoCountryCode="US", MessageType="TRANSACTIONAL", NumberCapabilities=["SMS"], NumberType="LONG_CODE"
    )["PhoneNumberId"],
    IsoCountryCode="US",
    MessageType="TRANSACTIONAL",
)
assert f":sms-voice:eu-west-1:{account}:pool/" in pool["PoolArn"], pool["PoolArn"]

for access_key, secret_key, code in [
    (key, secret + "x", "InvalidSignatureException"),
    ("AKIANOBODYKNOWS00001", secret, "UnrecognizedClientException"),
]:
    try:
        client(access_key, secret_key).describe_pools()
        raise AssertionError(f"{access_key} with a wrong secret was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response

print("boto3 sigv4: ok")
