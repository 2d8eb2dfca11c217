#!/usr/bin/env bash
# A cfn bus agent in bash: coreutils (cksum, date, mv, rm, touch, od, tr), optional inotifywait.
# It speaks the on-disk protocol of docs/PROTOCOL.md with no cfn code at all.
#
#   bash-agent.sh run  --bus DIR --agent ID [--visibility-ms 30000] [--poll-ms 100]
#                      [--max-messages N] [--idle-exit-ms MS] [--depth-max 1000]
#       Receives messages. A "task" is answered with a "result" to its sender, payload
#       {"agent":ID,"task":<the task's payload>}, headers copied (trace context rides along).
#       A "stop" ends the loop. Malformed or foreign files go to dead/ with a .reason file (none
#       when the bus is too full to write one).
#       Waits with inotifywait when installed, else polls every --poll-ms.
#
#   bash-agent.sh send --bus DIR --from ID --to ID [--type T] [--priority normal]
#                      [--payload JSON] [--headers JSON] [--depth-max 1000]
#       Sends one message. Exit status 75 (EX_TEMPFAIL) when the inbox is full.
#
# DIR is the bus directory <root>/<name>, e.g. /dev/shm/cfn-coordination/default.

set -euo pipefail
shopt -s dotglob nullglob # globs see dot-files (they count and get dead-lettered) and vanish when empty
export LC_ALL=C

die() { printf 'bash-agent: %s\n' "$*" >&2; exit 2; }

# ---- options --------------------------------------------------------------------------------
COMMAND=${1:-}
[[ -n $COMMAND ]] || die "usage: bash-agent.sh run|send --bus DIR …"
shift
BUS="" AGENT="" FROM="" TO="" TYPE="task" PRIORITY="normal" PAYLOAD="null" HEADERS="{}"
VISIBILITY_MS=30000 POLL_MS=100 MAX_MESSAGES=0 IDLE_EXIT_MS=0 DEPTH_MAX=1000
while (($# > 0)); do
  case $1 in
    --bus) BUS=$2 ;;
    --agent) AGENT=$2 ;;
    --from) FROM=$2 ;;
    --to) TO=$2 ;;
    --type) TYPE=$2 ;;
    --priority) PRIORITY=$2 ;;
    --payload) PAYLOAD=$2 ;;
    --headers) HEADERS=$2 ;;
    --visibility-ms) VISIBILITY_MS=$2 ;;
    --poll-ms) POLL_MS=$2 ;;
    --max-messages) MAX_MESSAGES=$2 ;;
    --idle-exit-ms) IDLE_EXIT_MS=$2 ;;
    --depth-max) DEPTH_MAX=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
[[ -n $BUS ]] || die "--bus DIR is required"

# ---- protocol helpers -------------------------------------------------------------------------
ID_RE='^[A-Za-z0-9._-]{1,128}$'
valid_id() { [[ $1 =~ $ID_RE && $1 != "." && $1 != ".." ]]; }

now_us() { date +%s%6N; }
now_ms() { date +%s%3N; }

HOST_TAG=${HOSTNAME:-host}
HOST_TAG=$(printf '%s' "$HOST_TAG" | tr -c 'A-Za-z0-9-' '-' | cut -c1-48)
RANDOM_TAG=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
COUNTER=0
# UNIQ field: <host>-<pid>-<random>-<counter>, unique across hosts, processes and restarts.
next_unique() { COUNTER=$((COUNTER + 1)); UNIQUE="$HOST_TAG-$$-$RANDOM_TAG-$COUNTER"; }

# The shard count is fixed by bus.conf; the first opener writes it without overwriting (ln).
SHARDS=16
open_bus() {
  mkdir -p -m 0700 "$BUS"
  if [[ ! -f $BUS/bus.conf ]]; then
    next_unique
    printf 'version=1\nshards=16\n' >"$BUS/.bus.conf.$UNIQUE"
    ln "$BUS/.bus.conf.$UNIQUE" "$BUS/bus.conf" 2>/dev/null || true
    rm -f "$BUS/.bus.conf.$UNIQUE"
  fi
  local key value
  while IFS='=' read -r key value; do
    [[ $key == shards ]] && SHARDS=$value
  done <"$BUS/bus.conf"
}

# Sets AGENT_DIR for an agent id: <bus>/<cksum(id) mod shards>/<id>, creating its directories.
agent_dir() {
  local crc
  crc=$(printf '%s' "$1" | cksum)
  AGENT_DIR="$BUS/$((${crc%% *} % SHARDS))/$1"
  [[ -d $AGENT_DIR/dead ]] || mkdir -p -m 0700 "$AGENT_DIR/tmp" "$AGENT_DIR/inbox" "$AGENT_DIR/claimed" "$AGENT_DIR/dead"
}

# Sets DEPTH: messages queued + claimed (N of each file name, 1 for a foreign name).
count_depth() {
  local file name rest count
  DEPTH=0
  for file in "$1"/inbox/* "$1"/claimed/*; do
    [[ -e $file ]] || continue
    name=${file##*/}
    rest=${name#*_*_}
    count=${rest%%_*}
    [[ $count =~ ^[0-9]+$ ]] || count=1
    DEPTH=$((DEPTH + count))
  done
}

SEQ=0
# send FROM TO TYPE PRIORITY PAYLOAD HEADERS → 0, or 75 when the inbox is full.
send_message() {
  local from=$1 to=$2 type=$3 priority=$4 payload=$5 headers=$6 digit ts name
  valid_id "$from" || die "invalid agent id '$from'"
  valid_id "$to" || die "invalid agent id '$to'"
  [[ $type =~ ^[A-Za-z0-9._:/-]{1,128}$ ]] || die "invalid type '$type'"
  case $priority in high) digit=0 ;; normal) digit=1 ;; low) digit=2 ;; *) die "invalid priority '$priority'" ;; esac
  payload=${payload//$'\n'/ } # JSON allows no raw newline inside strings; between tokens it is a space
  headers=${headers//$'\n'/ }
  agent_dir "$to"
  count_depth "$AGENT_DIR"
  if ((DEPTH + 1 > DEPTH_MAX)); then
    printf 'bash-agent: CFN_ERR_INBOX_FULL: inbox of %s holds %d of %d messages\n' "$to" "$DEPTH" "$DEPTH_MAX" >&2
    return 75
  fi
  next_unique
  SEQ=$((SEQ + 1))
  ts=$(now_us)
  name=$(printf '%s_%016d_1_%s_0.json' "$digit" "$ts" "$UNIQUE")
  printf '{"v":1,"id":"%s","from":"%s","to":"%s","type":"%s","priority":"%s","seq":%d,"ts":%d,\n"headers":%s,\n"payload":%s}\n' \
    "$UNIQUE" "$from" "$to" "$type" "$priority" "$SEQ" "$ts" "$headers" "$payload" >"$AGENT_DIR/tmp/$name"
  mv "$AGENT_DIR/tmp/$name" "$AGENT_DIR/inbox/$name"
}

# dead_letter SOURCE_PATH FILE_NAME CAUSE REASON DELIVERIES
dead_letter() {
  local dead_name=$2 reason_tmp
  next_unique
  reason_tmp="$MY_DIR/tmp/.reason.$UNIQUE"
  # A full bus: the file still goes to dead/, without a reason file (PROTOCOL.md section 8).
  if ! { printf '{"cause":"%s","reason":"%s","deliveries":%d,"agent":"%s","pid":%d}\n' \
    "$3" "$4" "$5" "$AGENT" $$ >"$reason_tmp"; } 2>/dev/null; then
    rm -f "$reason_tmp"
    reason_tmp=
    printf 'bash-agent: cannot write the reason of dead letter %s (%s: %s)\n' "$2" "$3" "$4" >&2
  fi
  [[ -e $MY_DIR/dead/$dead_name ]] && dead_name="$2.$UNIQUE"
  if mv "$1" "$MY_DIR/dead/$dead_name" 2>/dev/null; then
    [[ -z $reason_tmp ]] || mv "$reason_tmp" "$MY_DIR/dead/$dead_name.reason" 2>/dev/null || rm -f "$reason_tmp"
  else
    [[ -z $reason_tmp ]] || rm -f "$reason_tmp"
  fi
}

# handle_message LINE1 LINE2 LINE3: one envelope (its three lines); sets STOP on "stop".
HANDLED=0
handle_message() {
  local line1=$1 line2=$2 line3=$3 from type headers payload
  [[ $line1 =~ \"from\":\"([A-Za-z0-9._-]+)\" ]] || return 1
  from=${BASH_REMATCH[1]}
  [[ $line1 =~ \"type\":\"([A-Za-z0-9._:/-]+)\" ]] || return 1
  type=${BASH_REMATCH[1]}
  [[ $line2 == '"headers":'*, ]] || return 1
  headers=${line2#\"headers\":}
  headers=${headers%,}
  [[ $line3 == '"payload":'*'}' ]] || return 1
  payload=${line3#\"payload\":}
  payload=${payload%\}}
  HANDLED=$((HANDLED + 1))
  case $type in
    stop) STOP=1 ;;
    task)
      until send_message "$AGENT" "$from" result normal "{\"agent\":\"$AGENT\",\"task\":$payload}" "$headers"; do
        sleep 0.05 # the sender's inbox is full: wait for room (backpressure), never drop
      done
      ;;
  esac
  return 0
}

# process_file CLAIMED_PATH CLAIMED_NAME COUNT DELIVERIES: handles a single or batch file, acks it.
process_file() {
  local path=$1 name=$2 count=$3 deliveries=$4 line1 line2 line3 header k
  # Only a regular file is a message: a FIFO would block the read, a symlink point anywhere.
  if [[ ! -f $path || -L $path ]]; then
    dead_letter "$path" "$name" foreign "not a regular file (a FIFO, directory, device or symlink)" "$deliveries"
    return
  fi
  if ((count == 1)); then
    {
      IFS= read -r line1 || true
      IFS= read -r line2 || true
      IFS= read -r line3 || true
    } <"$path"
    [[ $line1 == '{"v":1,"id":'* ]] ||
      { dead_letter "$path" "$name" malformed "not a protocol message (or truncated)" "$deliveries"; return; }
    # cfn-expires-at (PROTOCOL.md section 6): past it the sender needs no answer; not run.
    if [[ $line2 =~ \"cfn-expires-at\":\"([0-9]+)\" ]] && ((BASH_REMATCH[1] <= $(now_ms))); then
      dead_letter "$path" "$name" expired "expired at ${BASH_REMATCH[1]} ms (header cfn-expires-at)" "$deliveries"
      return
    fi
    handle_message "$line1" "$line2" "$line3" ||
      { dead_letter "$path" "$name" malformed "not a protocol message (or truncated)" "$deliveries"; return; }
  else
    {
      IFS= read -r header || true
      [[ $header == '{"v":1,"batch":[' ]] || { dead_letter "$path" "$name" malformed "bad batch header" "$deliveries"; return; }
      for ((k = 0; k < count; k++)); do
        IFS= read -r line1 || true
        IFS= read -r line2 || true
        IFS= read -r line3 || true
        line1=${line1#,}
        [[ $line1 == '{"v":1,"id":'* ]] && handle_message "$line1" "$line2" "$line3" ||
          { dead_letter "$path" "$name" malformed "batch message $k is malformed" "$deliveries"; return; }
      done
    } <"$path"
  fi
  rm -f "$path" # acknowledge
}

# Returns expired claims (and claims of dead processes) to the inbox.
sweep_claimed() {
  local file name base now fields pid
  now=$(now_ms)
  for file in "$MY_DIR"/claimed/*; do
    [[ -e $file ]] || continue
    name=${file##*/}
    IFS=_ read -r -a fields <<<"${name%.json}"
    ((${#fields[@]} == 7)) || continue
    pid=${fields[6]}
    if ((fields[5] <= now)) || { ((pid != $$)) && ! kill -0 "$pid" 2>/dev/null; }; then
      base="${fields[0]}_${fields[1]}_${fields[2]}_${fields[3]}_${fields[4]}.json"
      mv "$file" "$MY_DIR/inbox/$base" 2>/dev/null || true
    fi
  done
}

NAME_RE='^([012])_([0-9]{16})_([0-9]+)_([A-Za-z0-9.-]+)_([0-9]+)\.json$'
DELIVERIES_MAX=5

wait_for_inbox() {
  if command -v inotifywait >/dev/null 2>&1; then
    inotifywait -qq -t 1 -e moved_to -e create "$MY_DIR/inbox" 2>/dev/null || true
  else
    sleep "$((POLL_MS / 1000)).$(printf '%03d' $((POLL_MS % 1000)))"
  fi
}

run_agent() {
  valid_id "$AGENT" || die "invalid agent id '$AGENT'"
  agent_dir "$AGENT"
  MY_DIR=$AGENT_DIR
  touch "$MY_DIR/heartbeat"
  sweep_claimed
  STOP=0
  local idle_since name path claimed_name deadline files p t n u d heartbeat_at=$SECONDS
  idle_since=$(now_ms)
  trap 'STOP=1' TERM INT
  while ((STOP == 0)); do
    if ((SECONDS - heartbeat_at >= 30)); then
      touch "$MY_DIR/heartbeat"
      heartbeat_at=$SECONDS
      sweep_claimed
    fi
    files=()
    for path in "$MY_DIR"/inbox/*; do [[ -e $path ]] && files+=("${path##*/}"); done # glob order is C-sorted
    if ((${#files[@]} == 0)); then
      if ((IDLE_EXIT_MS > 0 && $(now_ms) - idle_since > IDLE_EXIT_MS)); then break; fi
      wait_for_inbox
      continue
    fi
    for name in "${files[@]}"; do
      path="$MY_DIR/inbox/$name"
      if [[ ! $name =~ $NAME_RE ]]; then
        dead_letter "$path" "$name" foreign "file name does not follow the protocol" 0
        continue
      fi
      p=${BASH_REMATCH[1]} t=${BASH_REMATCH[2]} n=${BASH_REMATCH[3]} u=${BASH_REMATCH[4]} d=${BASH_REMATCH[5]}
      if ((d >= DELIVERIES_MAX)); then
        dead_letter "$path" "$name" deliveries_exhausted "already delivered $d times" "$d"
        continue
      fi
      deadline=$(($(now_ms) + VISIBILITY_MS))
      claimed_name="${p}_${t}_${n}_${u}_$((d + 1))_${deadline}_$$.json"
      mv "$path" "$MY_DIR/claimed/$claimed_name" 2>/dev/null || continue # another consumer won
      process_file "$MY_DIR/claimed/$claimed_name" "$claimed_name" "$n" "$((d + 1))"
      idle_since=$(now_ms)
      if ((MAX_MESSAGES > 0 && HANDLED >= MAX_MESSAGES)); then STOP=1; fi
      ((STOP == 0)) || break
    done
  done
  printf '{"handled":%d}\n' "$HANDLED"
}

open_bus
case $COMMAND in
  run) run_agent ;;
  send)
    [[ -n $FROM && -n $TO ]] || die "send needs --from and --to"
    send_message "$FROM" "$TO" "$TYPE" "$PRIORITY" "$PAYLOAD" "$HEADERS" || exit $?
    ;;
  *) die "unknown command $COMMAND (run or send)" ;;
esac
