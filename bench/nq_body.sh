#!/usr/bin/env bash
# NotificationQueue body writer: the notification plugin's own (notification_body) against jansson's
# json_dumpb on the same seed-shaped message, in one process, alternating. Prints ns per message
# for both and the ratio; the plugin keeps its writer only while the ratio stays well above 1.5
# (see "Body" in plugins/notification/message.c).
#
#   bench/nq_body.sh [COUNT [ROUNDS]]   (default 200000 messages, best of 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Iplugins/notification -Iutil bench/nq_body.c \
    plugins/notification/message.c util/*.c $(pkg-config --cflags --libs jansson libcrypto) -o "$tmp/nq_body"
"$tmp/nq_body" "$@"
