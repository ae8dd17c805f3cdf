// The phone-number lifecycle through the AWS SDK for JavaScript v3 against phone-ledger:
// request, describe with filters and the paginator, update, release refused then accepted, pools,
// and the errors with their Reason; the available numbers through their paginator, one of them
// then requested. Usage: node lifecycle.mjs http://127.0.0.1:PORT
import assert from "node:assert/strict";
import {
  PinpointSMSVoiceV2Client,
  RequestPhoneNumberCommand,
  DescribePhoneNumbersCommand,
  UpdatePhoneNumberCommand,
  ReleasePhoneNumberCommand,
  CreatePoolCommand,
  AssociateOriginationIdentityCommand,
  DisassociateOriginationIdentityCommand,
  ListPoolOriginationIdentitiesCommand,
  DeletePoolCommand,
  paginateDescribePhoneNumbers,
  paginateListAvailablePhoneNumbers,
} from "@aws-sdk/client-pinpoint-sms-voice-v2";

const endpoint = process.argv[2];
assert.ok(endpoint, "usage: node lifecycle.mjs ENDPOINT");
const client = new PinpointSMSVoiceV2Client({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "777788889999", secretAccessKey: "x" },
  maxAttempts: 1,
});

/** The error `promise` rejects with; fails if it resolves. */
async function refusal(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

const request = (messageType) =>
  client.send(
    new RequestPhoneNumberCommand({
      IsoCountryCode: "US",
      MessageType: messageType,
      NumberCapabilities: ["SMS"],
      NumberType: "LONG_CODE",
      Tags: [{ Key: "sdk", Value: "js" }],
    }),
  );

const first = await request("TRANSACTIONAL");
const second = await request("TRANSACTIONAL");
const third = await request("PROMOTIONAL");
assert.match(first.PhoneNumberId, /^phone-[0-9a-f]{32}$/);
assert.equal(first.Status, "ACTIVE");
assert.ok(first.CreatedTimestamp instanceof Date, "timestamps are dates");
assert.ok(first.$metadata.requestId, "x-amzn-RequestId");

// Filters, and the paginator over pages of one.
const transactional = await client.send(
  new DescribePhoneNumbersCommand({ Filters: [{ Name: "message-type", Values: ["TRANSACTIONAL"] }] }),
);
assert.deepEqual(
  transactional.PhoneNumbers.map((n) => n.PhoneNumberId).sort(),
  [first.PhoneNumberId, second.PhoneNumberId].sort(),
);
const seen = [];
let pages = 0;
for await (const page of paginateDescribePhoneNumbers({ client, pageSize: 1 }, {})) {
  pages += 1;
  seen.push(...page.PhoneNumbers.map((n) => n.PhoneNumberId));
}
assert.equal(seen.length, 3);
assert.ok(pages >= 3, `${pages} pages`);
const badFilter = await refusal(
  client.send(new DescribePhoneNumbersCommand({ Filters: [{ Name: "status", Values: ["NOPE"] }] })),
);
assert.equal(badFilter.name, "ValidationException");
assert.equal(badFilter.Reason, "INVALID_FILTER_VALUES");

// Deletion protection refuses the release, with its Reason; the refusal changes nothing.
const protectedNumber = await client.send(
  new UpdatePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId, DeletionProtectionEnabled: true }),
);
assert.equal(protectedNumber.DeletionProtectionEnabled, true);
const protectedRelease = await refusal(client.send(new ReleasePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId })));
assert.equal(protectedRelease.name, "ConflictException");
assert.equal(protectedRelease.Reason, "DELETION_PROTECTION_ENABLED");
assert.equal(protectedRelease.ResourceId, first.PhoneNumberId);
await client.send(new UpdatePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId, DeletionProtectionEnabled: false }));

// Pools: a member is not released; a number of another message type does not join.
const pool = await client.send(
  new CreatePoolCommand({ OriginationIdentity: first.PhoneNumberId, IsoCountryCode: "US", MessageType: "TRANSACTIONAL" }),
);
assert.match(pool.PoolId, /^pool-[0-9a-f]{32}$/);
const pooledRelease = await refusal(client.send(new ReleasePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId })));
assert.equal(pooledRelease.Reason, "PHONE_NUMBER_ASSOCIATED_TO_POOL");
await client.send(
  new AssociateOriginationIdentityCommand({ PoolId: pool.PoolId, OriginationIdentity: second.PhoneNumberArn, IsoCountryCode: "US" }),
);
const mismatch = await refusal(
  client.send(new AssociateOriginationIdentityCommand({ PoolId: pool.PoolId, OriginationIdentity: third.PhoneNumberId })),
);
assert.equal(mismatch.Reason, "MESSAGE_TYPE_MISMATCH");
const members = await client.send(new ListPoolOriginationIdentitiesCommand({ PoolId: pool.PoolId }));
assert.deepEqual(
  members.OriginationIdentities.map((m) => m.OriginationIdentity).sort(),
  [first.PhoneNumberId, second.PhoneNumberId].sort(),
);
await client.send(new DisassociateOriginationIdentityCommand({ PoolId: pool.PoolId, OriginationIdentity: second.PhoneNumberId }));
const last = await refusal(
  client.send(new DisassociateOriginationIdentityCommand({ PoolId: pool.PoolId, OriginationIdentity: first.PhoneNumberId })),
);
assert.equal(last.Reason, "LAST_PHONE_NUMBER");
await client.send(new DeletePoolCommand({ PoolId: pool.PoolId }));

// Released, then gone.
const released = await client.send(new ReleasePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId }));
assert.equal(released.Status, "DELETED");
const gone = await refusal(client.send(new ReleasePhoneNumberCommand({ PhoneNumberId: first.PhoneNumberId })));
assert.equal(gone.name, "ResourceNotFoundException");
assert.equal(gone.ResourceType, "phone-number");
assert.equal(gone.$metadata.httpStatusCode, 400);

// The available numbers: the paginator comes to an end, each number once; one of them is
// requested by its digits (ExactMatch).
const available = [];
for await (const page of paginateListAvailablePhoneNumbers(
  { client, pageSize: 10 },
  { IsoCountryCode: "US", NumberCapabilities: ["SMS"], NumberType: "TEN_DLC" },
)) {
  available.push(...page.AvailablePhoneNumbers);
}
assert.equal(available.length, 100);
assert.equal(new Set(available).size, available.length, "a number listed twice");
const chosen = await client.send(
  new RequestPhoneNumberCommand({
    IsoCountryCode: "US",
    MessageType: "TRANSACTIONAL",
    NumberCapabilities: ["SMS"],
    NumberType: "TEN_DLC",
    NumberPreference: [{ PreferenceType: ["ExactMatch"], Filter: [available[2]] }],
  }),
);
assert.equal(chosen.PhoneNumber, available[2]);

console.log("js-sdk: ok");
