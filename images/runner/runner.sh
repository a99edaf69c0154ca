#!/bin/sh
# flotilla shell kernel runner: PID 1 of the shell image (`/bin/sh /opt/flotilla/runner.sh`,
# busybox ash). Same JSON-lines protocol and the same attach/EOF/SIGTERM behaviour as
# runner.py; see the comment at the top of that file for how Docker's attached stdin behaves.
#
# There is no JSON parser in busybox, so a line is only checked to look like one object and
# "op" and "id" are pulled out with sed. Keys are matched anywhere in the line, so a value that
# itself contains the text `"op":"..."` can confuse it; the agent never sends such lines.

# PID 1 has no default signal dispositions: without this trap SIGTERM would be ignored.
trap 'exit 0' TERM

version=$(busybox 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')

# Prints "<op> <id>" for a line shaped like a JSON object: op is empty when missing or not a
# plain word, id is a number, a string without escapes, or null. Prints nothing otherwise.
parse() {
	printf '%s\n' "$1" | sed -n -E '
		/^[[:space:]]*\{.*\}[[:space:]]*$/!q
		h
		s/.*"id"[[:space:]]*:[[:space:]]*(-?[0-9]+(\.[0-9]+)?|"[^"\\]*")[[:space:]]*[,}].*/\1/
		t id
		s/.*/null/
		t id
		:id
		x
		s/.*"op"[[:space:]]*:[[:space:]]*"([A-Za-z0-9_.-]+)".*/\1/
		t op
		s/.*//
		:op
		G
		s/\n/ /
		p'
}

# Dispatch by op; execute modes get their own case when they are added.
handle() {
	parsed=$(parse "$1")
	if [ -z "$parsed" ]; then
		printf '{"op":"error","id":null,"msg":"malformed line: expected a JSON object"}\n'
		return
	fi
	op=${parsed%% *}
	id=${parsed#* }
	case "$op" in
	ping) printf '{"op":"pong","id":%s}\n' "$id" ;;
	'') printf '{"op":"error","id":%s,"msg":"missing or invalid op"}\n' "$id" ;;
	*) printf '{"op":"error","id":%s,"msg":"unknown op: %s"}\n' "$id" "$op" ;;
	esac
}

printf '{"op":"ready","language":"shell","version":"%s","pid":%d}\n' "$version" $$

# `|| [ -n "$line" ]` keeps a last line that has no newline before EOF.
while IFS= read -r line || [ -n "$line" ]; do
	case "$line" in
	*[![:space:]]*) handle "$line" ;;
	esac
done

# stdin reached EOF: stay up until stopped. `wait` returns as soon as the TERM trap fires.
while :; do
	sleep 86400 &
	wait $!
done
