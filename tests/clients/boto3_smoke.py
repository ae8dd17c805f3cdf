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

# Opt-out lists: create, the documented refusals, opted-out numbers with the paginator.
created = client.create_opt_out_list(OptOutListName="boto-list", Tags=[{"Key": "team", "Value": "ops"}])
assert created["OptOutListArn"].endswith(":opt-out-list/boto-list"), created
try:
    client.create_opt_out_list(OptOutListName="boto-list")
    raise AssertionError("a list was created twice")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "RESOURCE_ALREADY_EXISTS", e.response
names = sorted(l["OptOutListName"] for l in client.describe_opt_out_lists()["OptOutLists"])
assert names == ["Default", "boto-list"], names
for i in range(5):
    put = client.put_opted_out_number(OptOutListName="boto-list", OptedOutNumber=f"+1206555020{i}")
    assert put["OptedOutNumber"] == f"+1206555020{i}" and put["EndUserOptedOut"] is False, put
pages = list(client.get_paginator("describe_opted_out_numbers").paginate(OptOutListName="boto-list", PaginationConfig={"PageSize": 2}))
assert [len(p["OptedOutNumbers"]) for p in pages] == [2, 2, 1], pages
removed = client.delete_opted_out_number(OptOutListName="boto-list", OptedOutNumber="+12065550200")
assert removed["OptedOutNumber"] == "+12065550200", removed
try:
    client.delete_opted_out_number(OptOutListName="boto-list", OptedOutNumber="+12065550200")
    raise AssertionError("deleted twice")
except client.exceptions.ResourceNotFoundException as e:
    assert e.response["ResourceType"] == "opted-out-number", e.response
user = client.request_phone_number(
    IsoCountryCode="US", MessageType="TRANSACTIONAL", NumberCapabilities=["SMS"], NumberType="LONG_CODE", OptOutListName="boto-list"
)
try:
    client.delete_opt_out_list(OptOutListName="boto-list")
    raise AssertionError("a list in use was deleted")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "RESOURCE_DELETION_NOT_ALLOWED", e.response

# Tags by ARN on a number, a pool and a list.
pool = client.create_pool(OriginationIdentity=user["PhoneNumberId"], IsoCountryCode="US", MessageType="TRANSACTIONAL")
for arn in (user["PhoneNumberArn"], pool["PoolArn"], created["OptOutListArn"]):
    client.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "x"}])
    client.untag_resource(ResourceArn=arn, TagKeys=["team"])
    tags = client.list_tags_for_resource(ResourceArn=arn)["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}], (arn, tags)
try:
    client.list_tags_for_resource(ResourceArn=user["PhoneNumberArn"].replace("111122223333", "444455556666"))
    raise AssertionError("another account's resource was found")
except client.exceptions.ResourceNotFoundException:
    pass

# UpdatePool, keywords, messages and the account.
updated = client.update_pool(PoolId=pool["PoolId"], DeletionProtectionEnabled=True, SharedRoutesEnabled=True)
assert updated["DeletionProtectionEnabled"] is True and updated["SharedRoutesEnabled"] is True, updated
kw = client.put_keyword(OriginationIdentity=pool["PoolId"], Keyword="INFO", KeywordMessage="Open 9-5", KeywordAction="AUTOMATIC_RESPONSE")
assert kw["Keyword"] == "INFO" and kw["OriginationIdentity"] == pool["PoolId"], kw
keywords = [k["Keyword"] for k in client.describe_keywords(OriginationIdentity=pool["PoolId"])["Keywords"]]
assert keywords == ["HELP", "INFO", "STOP"], keywords
try:
    client.delete_keyword(OriginationIdentity=pool["PoolId"], Keyword="STOP")
    raise AssertionError("STOP was deleted")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "RESOURCE_DELETION_NOT_ALLOWED", e.response
sent = client.send_text_message(OriginationIdentity=user["PhoneNumberId"], DestinationPhoneNumber="+12065550300", MessageBody="hello")
assert sent["MessageId"], sent
client.put_opted_out_number(OptOutListName="boto-list", OptedOutNumber="+12065550301")
try:
    client.send_text_message(OriginationIdentity=user["PhoneNumberArn"], DestinationPhoneNumber="+12065550301", MessageBody="hello")
    raise AssertionError("a message reached an opted-out destination")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "DESTINATION_PHONE_NUMBER_OPTED_OUT", e.response
try:
    client.send_voice_message(OriginationIdentity=user["PhoneNumberId"], DestinationPhoneNumber="+12065550300", MessageBody="hello")
    raise AssertionError("a voice message left an SMS-only number")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "NUMBER_CAPABILITIES_MISMATCH", e.response
try:
    client.send_media_message(
        OriginationIdentity=user["PhoneNumberId"], DestinationPhoneNumber="+12065550300", MediaUrls=["s3://bucket/a.png"]
    )
    raise AssertionError("a media message left an SMS-only number")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "NUMBER_CAPABILITIES_MISMATCH", e.response
# Sender ids: leased, described by name and by filter, a pool's member, a sender of messages,
# protected from release while in a pool, then released.
leased = client.request_sender_id(SenderId="BotoShop", IsoCountryCode="GB", MessageTypes=["TRANSACTIONAL"])
assert leased["SenderIdArn"].endswith(":sender-id/BotoShop/GB"), leased
try:
    client.request_sender_id(SenderId="BotoShop", IsoCountryCode="GB")
    raise AssertionError("a sender id was leased twice")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "RESOURCE_ALREADY_EXISTS", e.response
described = client.describe_sender_ids(SenderIds=[{"SenderId": "BotoShop", "IsoCountryCode": "GB"}])["SenderIds"]
assert [s["MessageTypes"] for s in described] == [["TRANSACTIONAL"]], described
filtered = client.describe_sender_ids(Filters=[{"Name": "iso-country-code", "Values": ["GB"]}])["SenderIds"]
assert [s["SenderId"] for s in filtered] == ["BotoShop"], filtered
client.associate_origination_identity(PoolId=pool["PoolId"], OriginationIdentity="BotoShop", IsoCountryCode="GB")
try:
    client.release_sender_id(SenderId="BotoShop", IsoCountryCode="GB")
    raise AssertionError("a sender id in a pool was released")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "SENDER_ID_ASSOCIATED_TO_POOL", e.response
sent = client.send_text_message(OriginationIdentity="BotoShop", DestinationPhoneNumber="+447400123456", MessageBody="hi")
assert sent["MessageId"], sent
client.disassociate_origination_identity(PoolId=pool["PoolId"], OriginationIdentity=leased["SenderIdArn"], IsoCountryCode="GB")
client.update_sender_id(SenderId="BotoShop", IsoCountryCode="GB", DeletionProtectionEnabled=True)
try:
    client.release_sender_id(SenderId="BotoShop", IsoCountryCode="GB")
    raise AssertionError("a protected sender id was released")
except client.exceptions.ConflictException as e:
    assert e.response["Reason"] == "DELETION_PROTECTION_ENABLED", e.response
client.update_sender_id(SenderId="BotoShop", IsoCountryCode="GB", DeletionProtectionEnabled=False)
assert client.release_sender_id(SenderId="BotoShop", IsoCountryCode="GB")["SenderId"] == "BotoShop"
try:
    client.describe_sender_ids(SenderIds=[{"SenderId": "BotoShop", "IsoCountryCode": "GB"}])
    raise AssertionError("a released sender id is described")
except client.exceptions.ResourceNotFoundException:
    pass
limits = {l["Name"]: (l["Used"], l["Max"]) for l in client.describe_account_limits()["AccountLimits"]}
assert limits["POOLS"][0] == 1 and limits["OPT_OUT_LISTS"][0] == 2 and limits["SENDER_IDS"][0] == 0, limits
assert client.describe_account_attributes()["AccountAttributes"][0]["Name"] == "ACCOUNT_TIER"
assert len(client.describe_spend_limits()["SpendLimits"]) == 3
print("boto3: ok")
