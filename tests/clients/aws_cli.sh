#!/usr/bin/env bash
# The phone-number lifecycle through the AWS CLI (as pip installs it) against phone-ledger,
# configured exactly as the README shows: request, describe with filters and pagination, update,
# release refused then accepted, pools, and the errors. Usage: aws_cli.sh http://127.0.0.1:PORT
set -euo pipefail
endpoint="$1"
export AWS_ACCESS_KEY_ID=444455556666 AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1
unset AWS_REGION AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_MAX_ATTEMPTS=1
sms() { aws pinpoint-sms-voice-v2 --endpoint-url "$endpoint" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# Runs a command that must fail, and checks its error names $1.
refused() {
  local expected="$1"; shift
  local err
  if err=$("$@" 2>&1 >/dev/null); then fail "$* succeeded"; fi
  [[ "$err" == *"($expected)"* ]] || fail "$*: expected $expected, got: $err"
  echo "$err"
}

request() {
  sms request-phone-number --iso-country-code US --message-type "$1" \
    --number-capabilities SMS --number-type LONG_CODE --query PhoneNumberId --output text
}
first=$(request TRANSACTIONAL)
second=$(request TRANSACTIONAL)
third=$(request PROMOTIONAL)
[[ "$first" =~ ^phone-[0-9a-f]{32}$ ]] || fail "id $first"

# Filters, and pages of one followed to the end by the CLI's paginator.
transactional=$(sms describe-phone-numbers --filters Name=message-type,Values=TRANSACTIONAL \
  --query 'length(PhoneNumbers)' --output text)
[[ "$transactional" == 2 ]] || fail "transactional: $transactional"
all=$(sms describe-phone-numbers --page-size 1 --query 'PhoneNumbers[].PhoneNumberId' --output text | wc -w)
[[ "$all" == 3 ]] || fail "paginated: $all"
token=$(sms describe-phone-numbers --max-items 1 --query NextToken --output text)
[[ -n "$token" && "$token" != None ]] || fail "no NextToken with --max-items 1"
refused ValidationException sms describe-phone-numbers --filters Name=status,Values=NOPE >/dev/null

# Deletion protection refuses the release.
protected=$(sms update-phone-number --phone-number-id "$first" --deletion-protection-enabled \
  --query DeletionProtectionEnabled --output text)
[[ "$protected" == True ]] || fail "protection: $protected"
err=$(refused ConflictException sms release-phone-number --phone-number-id "$first")
[[ "$err" == *"deletion protection"* ]] || fail "reason: $err"
sms update-phone-number --phone-number-id "$first" --no-deletion-protection-enabled >/dev/null

# Pools.
pool=$(sms create-pool --origination-identity "$first" --iso-country-code US --message-type TRANSACTIONAL \
  --query PoolId --output text)
err=$(refused ConflictException sms release-phone-number --phone-number-id "$first")
[[ "$err" == *"pool"* ]] || fail "in a pool: $err"
sms associate-origination-identity --pool-id "$pool" --origination-identity "$second" --iso-country-code US >/dev/null
refused ConflictException sms associate-origination-identity --pool-id "$pool" --origination-identity "$third" >/dev/null
members=$(sms list-pool-origination-identities --pool-id "$pool" --query 'length(OriginationIdentities)' --output text)
[[ "$members" == 2 ]] || fail "members: $members"
sms disassociate-origination-identity --pool-id "$pool" --origination-identity "$second" >/dev/null
sms delete-pool --pool-id "$pool" >/dev/null

# Released, then gone.
status=$(sms release-phone-number --phone-number-id "$first" --query Status --output text)
[[ "$status" == DELETED ]] || fail "status: $status"
refused ResourceNotFoundException sms release-phone-number --phone-number-id "$first" >/dev/null
echo "aws-cli: ok"
