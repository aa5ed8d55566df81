#!/usr/bin/env bash
# End-to-end tests of scripts/study, scripts/pretrain and scripts/extrapolation-eval at tiny scale
# (registered in CMakeLists.txt as scripts_*): test_scripts.sh TSTL_BINARY CASE
#   study     scripts/study --quick on rope and alibi, 2 seeds: every evaluation file, the pooled
#             report (seeds column, mean +- sd), and a re-run that runs nothing again
#   pretrain  scripts/pretrain --dry-run prints the launch commands (global batch arithmetic, sbatch
#             and srun forms, refusals); then a 3-step tiny run under `mpirun -np 2` (one process
#             when mpirun is missing), then scripts/extrapolation-eval on it, and its re-run
set -euo pipefail
tstl=$(realpath "$1") case_name=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/tstl_scripts_test_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_in() {  # expect_in FILE TEXT: TEXT occurs in FILE (fixed string)
  grep -qF -- "$2" "$1" || { echo "--- $1:" >&2; cat "$1" >&2; fail "'$2' not found in $1"; }
}
expect_not_in() {
  ! grep -qF -- "$2" "$1" || { echo "--- $1:" >&2; cat "$1" >&2; fail "'$2' found in $1"; }
}

case "$case_name" in
study)
  TSTL=$tstl "$root/scripts/study" --quick --variants "rope alibi" --seeds "1 2" --out "$tmp/study" > "$tmp/first.log" 2>&1 ||
    { cat "$tmp/first.log" "$tmp"/study/logs/*.log >&2; fail "scripts/study --quick failed"; }
  for seed in 1 2; do
    for f in ppl-none ppl-pi ppl-ntk ppl-dynamic-ntk ppl-yarn ppl-logn passkey-none passkey-dynamic-ntk; do
      [ -f "$tmp/study/runs/rope-seed$seed/eval/$f.json" ] || fail "missing rope-seed$seed/eval/$f.json"
    done
    for f in ppl-none ppl-alibi-interp ppl-ntk-alibi ppl-dynamic-ntk-alibi passkey-none passkey-dynamic-ntk-alibi; do
      [ -f "$tmp/study/runs/alibi-seed$seed/eval/$f.json" ] || fail "missing alibi-seed$seed/eval/$f.json"
    done
  done
  md=$tmp/study/report/report.md
  expect_in "$md" "| run | variant | method | train len | seeds | 256 | 512 |"
  expect_in "$md" "| rope | rope | pi:8 | 256 | 2 |"
  expect_in "$md" "| rope | rope | none+logn | 256 | 2 |"
  expect_in "$md" "| alibi | alibi | ntk-alibi:8 | 256 | 2 |"
  expect_in "$md" "| alibi | alibi | dynamic-ntk-alibi:1 | 256 | 2 |"
  expect_in "$md" " ± "
  # Two seeds differ, so the pooled PPL at 1x has a spread > 0: "a.bc ± 0.00" would mean one run twice.
  line=$(grep -F "| rope | rope | none | 256 | 2 |" "$md") || fail "no pooled rope/none row in $md"
  spread=$(echo "$line" | awk -F'|' '{print $7}' | sed 's/.*± *//; s/ *$//')
  [ -n "$spread" ] && [ "$spread" != "0.00" ] || fail "no spread across seeds at 1x: $line"
  # A re-run resumes: trainings are complete, no evaluation runs again.
  stamp=$(stat -c %Y "$tmp/study/runs/rope-seed1/eval/ppl-none.json")
  sleep 1
  TSTL=$tstl "$root/scripts/study" --quick --variants "rope alibi" --seeds "1 2" --out "$tmp/study" > "$tmp/second.log" 2>&1 ||
    { cat "$tmp/second.log" >&2; fail "re-run of scripts/study --quick failed"; }
  cat "$tmp"/study/logs/*.log > "$tmp/second-runs.log"
  expect_not_in "$tmp/second-runs.log" "+ env OMP_NUM_THREADS=1 $tstl eval"
  [ "$(stat -c %Y "$tmp/study/runs/rope-seed1/eval/ppl-none.json")" = "$stamp" ] || fail "ppl-none.json was rewritten"
  # Bad input is refused with the value named.
  ! "$root/scripts/study" --variants "rope nope" --dry-run > "$tmp/bad.log" 2>&1 || fail "unknown variant accepted"
  expect_in "$tmp/bad.log" "unknown variant 'nope'"
  ;;
pretrain)
  # Launch commands, without running anything.
  "$root/scripts/pretrain" --config 350m --variant coca --data /nonexistent/pile_text_document --gpus-per-node 8 \
    --nodes 2 --tokens 6553600000 --launcher sbatch --dry-run > "$tmp/dry.log"
  expect_in "$tmp/dry.log" "prepare --format megatron --input /nonexistent/pile_text_document --tokenizer external:gpt-neox-20b"
  expect_in "$tmp/dry.log" "16 ranks (2 x 8), global batch 256 x 512 tokens = 16 x batch 8 x accumulation 2; 50000 steps"
  expect_in "$tmp/dry.log" "+ sbatch --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 scripts/train.sbatch configs/350m.cfg"
  SLURM_JOB_ID=1 "$root/scripts/pretrain" --config 1.3b --variant alibi --data x.h5 --gpus-per-node 8 --nodes 8 \
    --dry-run > "$tmp/srun.log"
  expect_in "$tmp/srun.log" "+ srun --kill-on-bad-exit=1 --nodes 8 --ntasks-per-node 8"
  expect_in "$tmp/srun.log" "--train.grad_accum 1 "
  ! "$root/scripts/pretrain" --config 1.3b --variant rope --data x.h5 --gpus-per-node 3 --nodes 1 --dry-run 2> "$tmp/err.log" ||
    fail "a global batch that 3 ranks cannot split was accepted"
  expect_in "$tmp/err.log" "global batch 256 is not a multiple of ranks x batch_size = 3 x 4 = 12"

  # A real tiny run: 2 ranks under mpirun where it exists.
  mkdir "$tmp/book"  # 10 documents of 20 KB, 2 of them for validation
  { gunzip -c "$root/data/corpus/moby-dick.txt.gz" || true; } | head -c 200000 | split -b 20000 - "$tmp/book/part-"
  for f in "$tmp"/book/part-*; do mv "$f" "$f.txt"; done
  "$tstl" prepare --input "$tmp/book" --tokenizer byte --val-fraction 0.2 --output "$tmp/book.h5" > /dev/null
  ranks=2
  command -v mpirun > /dev/null || ranks=1
  "$root/scripts/pretrain" --config configs/tiny.cfg --variant coca --data "$tmp/book.h5" --gpus-per-node "$ranks" \
    --nodes 1 --device cpu --global-batch 8 --steps 3 --out "$tmp/run" --tstl "$tstl" -- --train.save_every 3 \
    > "$tmp/train.log" 2>&1 || { cat "$tmp/train.log" >&2; fail "scripts/pretrain failed"; }
  expect_in "$tmp/train.log" "global batch 8 x 32 tokens = $ranks x batch 4 x accumulation $((2 / ranks))"
  if [ "$ranks" = 2 ]; then
    expect_in "$tmp/train.log" "+ mpirun -np 2"
    expect_in "$tmp/train.log" "ranks: rank 0/2 (local 0, mpirun), 2 in all"
  fi
  [ -f "$tmp/run/checkpoints/step_00000003.h5" ] || { ls -R "$tmp/run" >&2; fail "no step-3 checkpoint"; }

  # The paper's evaluation on it: PPL and passkey (>= 241 tokens for the byte template) at 2 lengths.
  "$root/scripts/extrapolation-eval" --run "$tmp/run" --data "$tmp/book.h5" --lengths 256,512 --factor 2 --cases 2 \
    --tstl "$tstl" > "$tmp/eval.log" 2>&1 || { cat "$tmp/eval.log" >&2; fail "scripts/extrapolation-eval failed"; }
  for f in ppl-none ppl-dynamic-ntk passkey-none passkey-dynamic-ntk; do
    [ -f "$tmp/run-extrapolation/eval/$f.json" ] || fail "missing run-extrapolation/eval/$f.json"
  done
  expect_in "$tmp/run-extrapolation/report/report.md" "| run-extrapolation | coca | dynamic-ntk:2 | 32 | *"
  expect_in "$tmp/run-extrapolation/eval/ppl-dynamic-ntk.json" '"step":3'
  "$root/scripts/extrapolation-eval" --run "$tmp/run" --data "$tmp/book.h5" --lengths 256,512 --factor 2 --cases 2 \
    --tstl "$tstl" > "$tmp/eval2.log" 2>&1
  expect_not_in "$tmp/eval2.log" " eval ppl "
  expect_in "$tmp/eval2.log" " report "
  ;;
*) fail "unknown case $case_name (study, pretrain)" ;;
esac
echo "ok: $case_name"
