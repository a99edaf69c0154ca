#!/bin/sh
# flotilla shell kernel runner: PID 1 of the shell image (`/bin/sh /opt/flotilla/runner.sh`,
# busybox ash). Same JSON-lines protocol (PROTOCOL.md next to this file) and the same
# attach/EOF behaviour as runner.py; see the comment at the top of that file for how Docker's
# attached stdin behaves. Only busybox is available: applets the image does not link are called
# as `busybox NAME`.
#
# Processes (all talk through FIFOs in $T):
# - PID 1 (this script) is the executor: it reads run requests from $T/req and runs each
#   command as a foreground child. It has to be: a background job of a non-interactive shell
#   starts with SIGINT ignored, and so would everything it runs, and an interrupt could not
#   work. A command runs as `sh -c '. FILE'` (no argument-length limit) in its own process
#   group (busybox setsid), stdin /dev/null, stdout/stderr into two FIFOs.
# - the reader (awk, background) parses the agent's requests: replies and acks go to the
#   sender, runs to the executor, interrupts are signals to the run's process group.
# - the sender (awk, background) is the only writer of the protocol stdout: it numbers the
#   messages (seq), keeps them until acknowledged, and replays them.
# - per stream of a running command, a chunker (background) takes whatever is in the FIFO
#   (one read, up to 64 KiB), JSON-escapes it with awk into a file and hands the file to the
#   sender. Under load the reads come back full, so messages grow to 64 KiB by themselves;
#   after a small read it waits 20 ms to let more accumulate.
# - back-pressure: $T/credit holds one byte per 64 KiB of escaped output the replay buffer may
#   still take (1024 = 64 MiB). A chunker takes its bytes before handing over a chunk, the
#   sender puts them back when the chunk is acknowledged; when there are none, the chunker
#   blocks, the FIFO fills and the command blocks in write().
#
# Limits of doing this in sh: stdout and stderr come through two pipes, so their relative order
# is only as good as the scheduling of the two chunkers (output of one stream keeps its order).
# A NUL byte in output is sent as U+0000 and so is a raw 0xFF byte. SIGTERM (docker stop) ends
# the runner at once while idle, but waits for a running command (or Docker's stop timeout).

# PID 1 has no default signal dispositions: without this trap SIGTERM would be ignored.
trap 'exit 0' TERM

bb=/bin/busybox
[ -x "$bb" ] || bb=busybox

# Code runs as `work` (uid 1000). Started as root (an image without USER): switch, if allowed.
if [ "$(id -u)" = 0 ] && [ -z "$FLOTILLA_RUNNER_AS_ROOT" ] && $bb su -s /bin/sh -c true work 2>/dev/null; then
	exec $bb su -s /bin/sh -c "exec /bin/sh $0" work
fi

version=$($bb 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')

# Working files; FLOTILLA_RUNNER_DIR is for running this outside a container.
T=${FLOTILLA_RUNNER_DIR:-/dev/shm/.flotilla-runner}
mkdir -p "$T" 2>/dev/null && [ -w "$T" ] || { T=/tmp/.flotilla-runner; mkdir -p "$T"; }
rm -rf "${T:?}"/*
chmod 700 "$T"
export FLOTILLA_T="$T"
cd /home/work 2>/dev/null || cd /

# --------------------------------------------------------------------------------------------
# awk programs
# --------------------------------------------------------------------------------------------

# JSON-escapes one chunk: stdin is the chunk (NUL bytes already turned into 0xFF by tr)
# followed by a sentinel "X". Writes the escaped text to `out`; a UTF-8 character cut at the end
# of the chunk is kept in the `carry` file for the next one. Prints "<credits> <eof> <small>".
cat >"$T/esc.awk" <<'EOF'
BEGIN {
	for (i = 1; i < 32; i++) ctl[i] = sprintf("%c", i)
	for (i = 128; i < 256; i++) ord[sprintf("%c", i)] = i
	pre = ""
	if ((getline pre < carry) <= 0) pre = ""
	close(carry)
	held = 0; size = 0; raw1 = ""
	printf "" > out
}
function esc(s,   i) {
	if (s ~ /[\\"]/) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s) }
	if (s ~ /[\001-\037\377]/) {
		gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
		for (i = 1; i < 32; i++)
			if (i != 9 && i != 10 && i != 13 && index(s, ctl[i])) gsub(ctl[i], sprintf("\\u%04x", i), s)
		gsub(/\377/, "\\u0000", s)
	}
	return s
}
function emit(s, nl) { s = esc(s) (nl ? "\\n" : ""); printf "%s", s > out; size += length(s) }
# Bytes at the end of s that start a UTF-8 character without its continuation bytes.
function cut(s,   L, k, o, need) {
	L = length(s)
	for (k = 1; k <= 3 && k <= L; k++) {
		o = ord[substr(s, L - k + 1, 1)] + 0
		if (o < 128) return 0
		if (o >= 192) { need = o >= 240 ? 4 : o >= 224 ? 3 : 2; return k < need ? k : 0 }
	}
	return 0
}
{
	if (NR == 1) { raw1 = $0; $0 = pre $0 }
	if (held) emit(h, 1)
	h = $0; held = 1
}
END {
	eof = (NR == 1 && raw1 == "X")
	h = substr(h, 1, length(h) - 1)
	k = eof ? 0 : cut(h)
	if (k) { printf "%s", substr(h, length(h) - k + 1) > carry; h = substr(h, 1, length(h) - k) }
	else printf "" > carry
	close(carry)
	if (h != "") emit(h, 0)
	close(out)
	printf "%d %d %d\n", int((size + 65535) / 65536), eof, size < 4096
}
EOF

# The only writer of the protocol stdout. Records (one line each, from the FIFO $T/ctl):
#   D <stream> <credits> <file> <id-json>   an out message; the escaped data is in file
#   S <op> <,"field":value...>              a sequenced message, e.g. finished
#   R <json>                                a message without seq (pong, error)
#   A <upto>                                ack
#   P <from>                                replay
cat >"$T/sender.awk" <<'EOF'
BEGIN {
	T = ENVIRON["FLOTILLA_T"]; CREDIT = T "/credit"
	seq = 0; lo = 1; trash = ""; nt = 0
	ones = "0000000000000000000000000000000000000000000000000000000000000000"
	while (length(ones) < 4096) ones = ones ones
}
function cleanup() { if (nt) { system("rm -f" trash); trash = ""; nt = 0 } }
function emit(line) { buf[seq] = line; print line; fflush() }
{
	t = substr($0, 1, 1)
	if (t == "D") {
		rest = substr($0, 3)
		sp = index(rest, " "); stream = substr(rest, 1, sp - 1); rest = substr(rest, sp + 1)
		sp = index(rest, " "); cr = substr(rest, 1, sp - 1) + 0; rest = substr(rest, sp + 1)
		sp = index(rest, " "); file = substr(rest, 1, sp - 1); idj = substr(rest, sp + 1)
		data = ""
		if ((getline data < file) <= 0) data = ""
		close(file)
		trash = trash " " file; nt++
		seq++; credits[seq] = cr
		emit("{\"op\":\"out\",\"seq\":" seq ",\"id\":" idj ",\"stream\":\"" stream "\",\"data\":\"" data "\"}")
		if (nt >= 32) cleanup()
	} else if (t == "S") {
		rest = substr($0, 3); sp = index(rest, " ")
		op = substr(rest, 1, sp - 1); rest = substr(rest, sp + 1)
		seq++
		emit("{\"op\":\"" op "\",\"seq\":" seq rest "}")
		if (op == "finished") cleanup()
	} else if (t == "R") {
		print substr($0, 3); fflush()
	} else if (t == "A") {
		upto = substr($0, 3) + 0; n = 0
		while (lo <= seq && lo <= upto) { n += credits[lo]; delete credits[lo]; delete buf[lo]; lo++ }
		while (n > 0) { m = n > 4096 ? 4096 : n; printf "%s", substr(ones, 1, m) > CREDIT; fflush(CREDIT); n -= m }
	} else if (t == "P") {
		from = substr($0, 3) + 0
		for (i = (from + 1 > lo ? from + 1 : lo); i <= seq; i++) print buf[i]
		fflush()
	}
}
EOF

# Parses the agent's requests (one JSON object a line; stdin is the protocol).
cat >"$T/reader.awk" <<'EOF'
BEGIN {
	T = ENVIRON["FLOTILLA_T"]; CTL = T "/ctl"; REQ = T "/req"; BUSY = T "/busy"
	for (i = 0; i < 10; i++) HEX[i ""] = i
	HEX["a"] = HEX["A"] = 10; HEX["b"] = HEX["B"] = 11; HEX["c"] = HEX["C"] = 12
	HEX["d"] = HEX["D"] = 13; HEX["e"] = HEX["E"] = 14; HEX["f"] = HEX["F"] = 15
	for (i = 1; i < 32; i++) CTLC[i] = sprintf("%c", i)
}
function send(rec) { print rec > CTL; fflush(CTL) }
function jesc(s,   i) {
	gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s)
	for (i = 1; i < 32; i++) if (index(s, CTLC[i])) gsub(CTLC[i], sprintf("\\u%04x", i), s)
	return s
}
function err(id, msg) {
	if (length(msg) > 600) msg = substr(msg, 1, 600) "..."
	send("R {\"op\":\"error\",\"id\":" id ",\"msg\":\"" jesc(msg) "\"}")
}

# ---- JSON: tokens NT, TT[i] (type: { } [ ] : , s n t f z), TV[i] (raw string content, number text)
function lex(s,   k, L, c, r) {
	L = length(s); k = 1
	while (k <= L) {
		c = substr(s, k, 1)
		if (c == " " || c == "\t" || c == "\r" || c == "\n") { k++; continue }
		if (index("{}[]:,", c)) { TT[++NT] = c; k++; continue }
		r = substr(s, k)
		if (match(r, /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/)) { TT[++NT] = "n"; TV[NT] = substr(r, 1, RLENGTH); k += RLENGTH }
		else if (substr(r, 1, 4) == "true") { TT[++NT] = "t"; k += 4 }
		else if (substr(r, 1, 5) == "false") { TT[++NT] = "f"; k += 5 }
		else if (substr(r, 1, 4) == "null") { TT[++NT] = "z"; k += 4 }
		else return 0
	}
	return 1
}
function tokenize(line,   m, nseg, segs, i, pos, L, raw) {
	NT = 0
	if (line ~ /[\001\002]/) return 0
	m = line
	# Mask escaped backslashes and quotes (same length), so every " left delimits a string.
	gsub(/\\\\/, "\001\001", m); gsub(/\\"/, "\001\002", m)
	nseg = split(m, segs, "\"")
	if (nseg % 2 == 0) return 0
	pos = 1
	for (i = 1; i <= nseg; i++) {
		L = length(segs[i])
		if (i % 2 == 0) {
			if (segs[i] ~ /[\003-\037]/ || segs[i] ~ /\\[^\/bfnrtu]/ || segs[i] ~ /\\$/) return 0
			if (segs[i] ~ /\\u([^0-9a-fA-F]|.[^0-9a-fA-F]|..[^0-9a-fA-F]|...[^0-9a-fA-F]|.?.?.?$)/) return 0
			TT[++NT] = "s"; TV[NT] = substr(line, pos, L)
		} else if (!lex(segs[i])) return 0
		pos += L + 1
	}
	return 1
}
function pvalue(depth,   t) {
	if (depth > 64) return 0
	t = TT[P]
	if (t == "{") return pobj(depth + 1)
	if (t == "[") return parr(depth + 1)
	if (t == "s" || t == "n" || t == "t" || t == "f" || t == "z") { P++; return 1 }
	return 0
}
function parr(depth) {
	P++
	if (TT[P] == "]") { P++; return 1 }
	while (1) {
		if (!pvalue(depth)) return 0
		if (TT[P] == ",") { P++; continue }
		if (TT[P] == "]") { P++; return 1 }
		return 0
	}
}
function pobj(depth,   k, v) {
	P++
	if (TT[P] == "}") { P++; return 1 }
	while (1) {
		if (TT[P] != "s") return 0
		k = P++
		if (TT[P] != ":") return 0
		v = ++P
		if (!pvalue(depth)) return 0
		if (depth == 0) KEY[decode(TV[k], "")] = v
		if (TT[P] == ",") { P++; continue }
		if (TT[P] == "}") { P++; return 1 }
		return 0
	}
}
function hexval(h) { return HEX[substr(h, 1, 1)] * 4096 + HEX[substr(h, 2, 1)] * 256 + HEX[substr(h, 3, 1)] * 16 + HEX[substr(h, 4, 1)] }
function utf8(cp) {
	if (cp == 0) return ""
	if (cp < 128) return sprintf("%c", cp)
	if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
	if (cp >= 55296 && cp < 57344) cp = 65533
	if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
	return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
}
# The decoded text of a raw JSON string body: returned, or (when file is set) written to file.
function decode(raw, file,   n, parts, i, p, c, out, piece, cp, lo) {
	if (!index(raw, "\\")) { if (file != "") { printf "%s", raw > file; return "" } return raw }
	n = split(raw, parts, "\\")
	out = parts[1]
	if (file != "") { printf "%s", out > file; out = "" }
	i = 2
	while (i <= n) {
		p = parts[i]
		if (p == "") {
			piece = "\\"; i++
			if (i <= n) { piece = piece parts[i]; i++ }
		} else {
			c = substr(p, 1, 1)
			if (c == "u") {
				cp = hexval(substr(p, 2, 4)); p = substr(p, 6)
				if (cp >= 55296 && cp < 56320 && p == "" && i < n && parts[i + 1] ~ /^u[dD][c-fC-F]/) {
					lo = hexval(substr(parts[i + 1], 2, 4)); i++
					cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); p = substr(parts[i], 6)
				}
				piece = utf8(cp) p
			} else {
				if (c == "n") c = "\n"; else if (c == "t") c = "\t"; else if (c == "r") c = "\r"
				else if (c == "b") c = "\010"; else if (c == "f") c = "\014"
				piece = c substr(p, 2)
			}
			i++
		}
		if (file != "") printf "%s", piece > file; else out = out piece
	}
	return out
}
function has(k) { return (k in KEY) }
function type(k) { return (k in KEY) ? TT[KEY[k]] : "" }
function str(k) { return decode(TV[KEY[k]], "") }
function num(k) { return TV[KEY[k]] + 0 }
function idjson(   t) {
	t = type("id")
	if (t == "s") return "\"" TV[KEY["id"]] "\""
	if (t == "n") return TV[KEY["id"]]
	return "null"
}
function tofile(k, file) { printf "" > file; decode(TV[KEY[k]], file); close(file) }
function active(   b) {
	b = ""
	if ((getline b < BUSY) <= 0) b = ""
	close(BUSY)
	return b
}

function handle(line,   op, id, mode, b, hasbuild) {
	split("", KEY)
	if (!tokenize(line) || TT[1] != "{") { err("null", "malformed line: expected a JSON object"); return }
	P = 1
	if (!pobj(0) || P != NT + 1) {
		split("", KEY)
		err("null", "malformed line: expected a JSON object"); return
	}
	id = idjson()
	op = type("op") == "s" ? str("op") : ""
	if (op == "ping") send("R {\"op\":\"pong\",\"id\":" id "}")
	else if (op == "ack" || op == "replay") {
		k = op == "ack" ? "upto" : "from"
		if (type(k) != "n") { err(id, op " needs " k " (a number)"); return }
		send((op == "ack" ? "A " : "P ") int(num(k)))
	} else if (op == "exec") {
		if (!((type("id") == "s" && TV[KEY["id"]] != "") || (type("id") == "n" && TV[KEY["id"]] ~ /^-?[0-9]+$/))) {
			err("null", "exec needs an id (a non-empty string or an integer)"); return
		}
		if (length(id) > 1024) { err("null", "exec id longer than 1024 bytes"); return }
		mode = type("mode") == "s" ? str("mode") : ""
		if (mode == "query") {
			if (type("code") != "s") { err(id, "query needs code (a string)"); return }
		} else if (mode == "batch") {
			if (has("build") && type("build") != "s" && type("build") != "z") { err(id, "batch build must be a string or null"); return }
			if (type("exec") != "s") { err(id, "batch needs exec (a string)"); return }
		} else { err(id, "unknown mode: " (type("mode") == "s" ? "'" mode "'" : "(none)") " (query or batch)"); return }
		b = active()
		if (b != "") { err(id, "run " b " is still active (one run at a time)"); return }
		print id > BUSY; close(BUSY)
		if (mode == "query") { tofile("code", T "/code"); print "query - " id > REQ }
		else {
			hasbuild = type("build") == "s" && TV[KEY["build"]] != ""
			if (hasbuild) tofile("build", T "/build")
			tofile("exec", T "/exec")
			print "batch " hasbuild " " id > REQ
		}
		fflush(REQ)
	} else if (op == "interrupt") {
		if (active() != id) { err(id, "no active run " id " to interrupt"); return }
		system("/bin/sh \"$FLOTILLA_T/intr.sh\" </dev/null >/dev/null 2>&1 &")
	} else if (op == "input") {
		if (type("text") != "s") { err(id, "input needs text (a string)"); return }
		err(id, "no run " id " is waiting for input (shell commands read /dev/null)")
	} else if (type("op") == "s") err(id, "unknown op: '" op "'")
	else err(id, "missing or invalid op")
}
/^[ \t\r]*$/ { next }
{ handle($0) }
EOF

# Interrupt: SIGINT to the running command's process group, SIGKILL 2 s later if it is still
# the same command. Waits (briefly) for a command that is only starting.
cat >"$T/intr.sh" <<'EOF'
T=$FLOTILLA_T
i=0
while [ $i -lt 100 ]; do
	pg=$(cat "$T/pgid" 2>/dev/null)
	if [ -n "$pg" ] && [ "$pg" -gt 1 ] && kill -INT -"$pg" 2>/dev/null; then
		sleep 2
		[ "$(cat "$T/pgid" 2>/dev/null)" = "$pg" ] && kill -KILL -"$pg" 2>/dev/null
		exit 0
	fi
	[ -e "$T/busy" ] || exit 0
	sleep 0.02
	i=$((i + 1))
done
EOF

# The command's own process: records its pid (= its process group after setsid), then becomes
# `sh -c '. FILE'` in a new session.
cat >"$T/wrap.sh" <<'EOF'
echo $$ >"$1"
exec /bin/busybox setsid /bin/sh -c '. "$1"' sh "$2"
EOF

# --------------------------------------------------------------------------------------------
# Executor (PID 1)
# --------------------------------------------------------------------------------------------

# One stream of a running command: $1 stream, $2 FIFO, $3 run id (JSON), $4 command number.
chunk() {
	exec 0<"$2"
	carry="$T/k.$4.$1"
	: >"$carry"
	n=0
	while :; do
		f="$T/d.$4.$1.$n"
		res=$({ dd bs=65536 count=1 2>/dev/null; printf X; } | $bb tr '\000' '\377' | awk -v carry="$carry" -v out="$f" -f "$T/esc.awk")
		set -- "$1" "$2" "$3" "$4" $res
		[ -n "$6" ] || break
		if [ "$5" -gt 0 ]; then
			i=0
			while [ $i -lt "$5" ]; do read -r -n 1 tk <&7; i=$((i + 1)); done
			printf 'D %s %s %s %s\n' "$1" "$5" "$f" "$3" >"$T/ctl"
			n=$((n + 1))
		else
			rm -f "$f"
		fi
		[ "$6" = 1 ] && break
		[ "$7" = 1 ] && sleep 0.02
	done
	rm -f "$carry"
	echo "done $4 $1" >"$T/req"
}

# Runs one command file; sets rc (as the shell reports it: 128+N when killed by signal N).
nchild=0
run_child() {
	nchild=$((nchild + 1))
	o="$T/o.$nchild"
	e="$T/e.$nchild"
	$bb mkfifo "$o" "$e"
	chunk stdout "$o" "$idj" "$nchild" &
	chunk stderr "$e" "$idj" "$nchild" &
	/bin/sh "$T/wrap.sh" "$T/pgid" "$1" </dev/null >"$o" 2>"$e" 3<&- 5<&- 6<&- 7<&-
	rc=$?
	pg=$(cat "$T/pgid" 2>/dev/null)
	rm -f "$T/pgid" "$o" "$e"
	# Both chunkers report EOF; when a background job of the command keeps a pipe open, stop
	# waiting once it has been quiet a moment (its later output still comes, after `finished`).
	ndone=0
	quiet=0
	while [ $ndone -lt 2 ]; do
		if read -r -t 0.05 kind cn stream <&6; then
			[ "$kind" = done ] && [ "$cn" = "$nchild" ] && ndone=$((ndone + 1))
			continue
		fi
		quiet=$((quiet + 1))
		if [ -n "$pg" ] && kill -0 -"$pg" 2>/dev/null; then
			[ $quiet -ge 4 ] && break
		else
			[ $quiet -ge 100 ] && break
		fi
	done
}

finish() {
	rm -f "$T/busy" "$T/code" "$T/build" "$T/exec"
	printf 'S finished ,"id":%s,"exitCode":%d\n' "$idj" "$1" >"$T/ctl"
}

$bb mkfifo "$T/ctl" "$T/req" "$T/credit"
exec 5<>"$T/ctl" 6<>"$T/req" 7<>"$T/credit"
printf '%01024d' 0 >&7

exec 3<&0 0</dev/null
printf '{"op":"ready","language":"shell","version":"%s","pid":%d}\n' "$version" $$
awk -f "$T/sender.awk" <&5 3<&- 6<&- 7<&- &
exec 1>/dev/null
awk -f "$T/reader.awk" <&3 5<&- 6<&- 7<&- &
exec 3<&-

while :; do
	IFS=' ' read -r kind flag idj <&6 || continue
	case "$kind" in
	query)
		run_child "$T/code"
		finish "$rc"
		;;
	batch)
		if [ "$flag" = 1 ]; then
			run_child "$T/build"
			if [ "$rc" -ne 0 ]; then
				finish "$rc"
				continue
			fi
			printf 'S build-finished ,"id":%s,"exitCode":0\n' "$idj" >"$T/ctl"
		fi
		run_child "$T/exec"
		finish "$rc"
		;;
	esac
done
