#!/bin/sh
# Starts SeaweedFS for docker-compose.yml with the S3 credentials taken from the environment.
# s3.json is a template: @S3_ACCESS_KEY_ID@ and @S3_SECRET_ACCESS_KEY@ are replaced here and the
# result is written to /tmp, so the credentials never live in the repository. All arguments are
# passed to `weed` (called directly: the image's own entrypoint would add
# -master.volumePreallocate, which reserves disk space for every volume up front).
set -eu

: "${S3_ACCESS_KEY_ID:?S3_ACCESS_KEY_ID is not set}"
: "${S3_SECRET_ACCESS_KEY:?S3_SECRET_ACCESS_KEY is not set}"

for value in "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"; do
  case "$value" in
    *'"'* | *'\'* | *'|'*)
      echo 'S3 credentials must not contain ", \ or |' >&2
      exit 64
      ;;
  esac
done

template="${S3_CONFIG_TEMPLATE:-/etc/seaweedfs/konan/s3.json}"
rendered="${S3_CONFIG_RENDERED:-/tmp/konan-s3.json}"
umask 077
# "&" is special in a sed replacement; escape it. "|" (the delimiter) was rejected above.
key=$(printf '%s' "$S3_ACCESS_KEY_ID" | sed 's/&/\\&/g')
secret=$(printf '%s' "$S3_SECRET_ACCESS_KEY" | sed 's/&/\\&/g')
sed -e "s|@S3_ACCESS_KEY_ID@|$key|g" -e "s|@S3_SECRET_ACCESS_KEY@|$secret|g" "$template" >"$rendered"

exec "${WEED:-/usr/bin/weed}" "$@" -s3.config="$rendered"
