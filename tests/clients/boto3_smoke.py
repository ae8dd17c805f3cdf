"""The same calls an operator makes with boto3, against phone-ledger.

Usage: python3 boto3_smoke.py ENDPOINT_URL
Exits non-zero (with the failing assertion) if boto3 sees anything unlike the real service.
"""
import sys

import boto3
from botocore.config import Config

endpoint = sys.argv[1]
client = boto3.client(
    "pinpoint-sms-voice-v2",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="111122223333",
    aws_secret_access_key="secret",
    config=Config(retries={"max_attempts": 1}),
)

number = client.request_phone_number(
    IsoCountryCode="US", MessageType="TRANSACTIONAL", NumberCapabilities=["SMS", "VOICE"], NumberType="LONG_CODE",
    DeletionProtectionEnabled=True,
)
pid = number["PhoneNumberId"]
assert pid.startswith("phone-"), number
assert number["Status"] == "ACTIVE", number
assert hasattr(number["CreatedTimestamp"], "year"), "timestamps parse as datetimes"

try:
    client.release_phone_number(PhoneNumberId=pid)
    raise AssertionError("a protected number was released")
except client.exceptions.ConflictException as e:
    assert e.response["Error"]["Code"] == "ConflictException", e.response
    assert e.response["Reason"] == "DELETION_PROTECTION_ENABLED", e.response
    assert e.response["ResponseMetadata"]["RequestId"], e.response

client.update_phone_number(PhoneNumberId=pid, DeletionProtectionEnabled=False)
for _ in range(4):
    client.request_phone_number(IsoCountryCode="US", MessageType="TRANSACTIONAL", NumberCapabilities=["SMS"], NumberType="LONG_CODE")
pages = list(client.get_paginator("describe_phone_numbers").paginate(PaginationConfig={"PageSize": 2}))
assert len(pages) == 3, pages
assert sum(len(p["PhoneNumbers"]) for p in pages) == 5

released = client.release_phone_number(PhoneNumberId=pid)
assert released["Status"] == "DELETED", released
try:
    client.release_phone_number(PhoneNumberId=pid)
    raise AssertionError("released twice")
except client.exceptions.ResourceNotFoundException as e:
    assert e.response["ResourceType"] == "phone-number" and e.response["ResourceId"] == pid, e.response

try:
    client.release_phone_number(PhoneNumberId="bad id!")
    raise AssertionError("a bad id was accepted")
except client.exceptions.ValidationException as e:
    assert e.response["Reason"] == "FIELD_VALIDATION_FAILED", e.response
    assert e.response["Fields"][0]["Name"] == "PhoneNumberId", e.response
print("boto3: ok")
