"""Bad inputs through the real CLI: one ``error:`` line, exit code 2, no traceback, files intact.

Each case runs ``costmodels ...`` on files from :func:`badinput.make_fixtures` (a
fresh folder per case). It must exit with code 2, print a line starting with
``error: `` that names the file / field / node / option at fault, print no
traceback, and leave the folder exactly as it was: every input byte-identical
(sha256), no ``-wal``/``-shm`` beside a refused store, no output created (inputs
and outputs are checked before work starts). Most cases run in-process through
``costmodels.cli.main``; those marked ``sub`` run the installed script in a
subprocess (a real user's view, and the only way to see what a manifest could
import).

A case that fails today because of code another file owns is marked xfail
(strict) with that file's name, so it flips to a failure when that file is fixed
and the mark can go.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil

import badinput as B
import pytest
from badinput import Case

# Keep measurements short if a case wrongly gets as far as measuring.
QUICK = "--repeat 1 --warmup 0 --max-retries 0"
SAMPLE1 = f"--sample 1 {QUICK}"


def C(id: str, argv: str, *names: str, **kw) -> Case:  # noqa: A002 - the case id
    return Case(id, tuple(shlex.split(argv)), names, **kw)


# main()'s last resort for an OSError nobody checked for: "error: PATH: No such file or directory"
BARE_OS_ERROR = re.compile(r"error: \S+: [A-Z][a-z]+( [a-z]+)*")

ROOT_CAN_WRITE = hasattr(os, "geteuid") and os.geteuid() == 0

CASES: list[Case] = [
    # ------------------------------------------------------------------ arguments
    C("sample-0", "estimate flops --sample 0 -o {d}/o.csv", "--sample"),
    C("sample-neg", "estimate flops --sample -1 -o {d}/o.csv", "--sample"),
    C("sample-huge", "estimate flops --sample 100000 -o {d}/o.csv", "100000"),
    C("sample-abc", "archs --sample abc", "--sample", "abc"),
    C("sample-0-fbnet", "archs --space fbnet --sample 0", "--sample"),
    C("sample-huge-models", "archs --space models:{d}/models_ok --sample 5", "5"),
    C("batch-0", "estimate flops --sample 2 --batch 0 -o {d}/o.csv", "--batch"),
    C("batch-neg", "info 1462 --batch -2", "--batch"),
    C("repeat-0", "measure {d}/tiny.onnx --repeat 0 --warmup 0", "repeat"),
    C("warmup-neg", "measure {d}/tiny.onnx --warmup -1 --repeat 1", "warmup"),
    C("threads-0", f"measure {{d}}/tiny.onnx --threads 0 {QUICK}", "threads"),
    C("pin-cpu-99", f"measure {{d}}/tiny.onnx --pin-cpu 99 {QUICK}", "pin", "99"),
    C("max-retries-neg", "measure {d}/tiny.onnx --repeat 1 --warmup 0 --max-retries -1",
      "retries"),
    C("timeout-0", f"measure {{d}}/tiny.onnx --isolate --timeout 0 {QUICK}", "timeout"),
    C("timeout-inf", f"measure {{d}}/tiny.onnx --isolate --timeout inf {QUICK}", "timeout"),
    C("min-round-s-inf", "measure {d}/tiny.onnx --min-round-s inf --repeat 2 --warmup 0",
      "--min-round-s"),
    C("threads-1000", f"measure {{d}}/tiny.onnx --threads 1000 {QUICK}", "threads", "256"),
    C("seed-neg", "archs --sample 2 --seed -1", "--seed"),
    C("seed-neg-fit", "fit gbdt --train {d}/good.csv --seed -3 -o {d}/m", "--seed"),
    C("seed-huge-fit", "fit gbdt --train {d}/good.csv --seed 99999999999999999999 -o {d}/m",
      "--seed", "2**32 - 1"),
    C("input-seed-neg", f"measure {{d}}/tiny.onnx --input-seed -1 {QUICK}", "--input-seed"),
    C("batch-huge", "estimate flops --sample 2 --batch 1000000000000 -o {d}/o.csv", "--batch",
      "65536"),
    C("rpc-port-out-of-range", f"measure {{d}}/tiny.onnx --runtime tvm --rpc-tracker h:99999 "
      f"--rpc-key k {QUICK}", "--rpc-tracker", "1-65535"),
    C("fbnet-arch-nested-deep", "info " + "[" * 3000 + "]" * 3000 + " --space fbnet",
      "nested too deep"),
    C("fit-into-a-folder-of-other-files", "fit gbdt --train {d}/good.csv -o {d}",
      "not a saved model"),
    C("roofline-spec-env-is-a-folder", "estimate roofline --sample 1 -o {d}/o.csv",
      "a folder, not a roofline spec", env={"COSTMODELS_ROOFLINE_SPEC": "{d}"}),
    C("out-name-too-long", "estimate flops --sample 1 -o {d}/" + "a" * 300 + ".csv",
      "shorter path"),
    C("rpc-without-tvm", f"measure {{d}}/tiny.onnx --rpc-tracker h:9190 --rpc-key k {QUICK}",
      "--rpc-tracker"),
    C("campaign-space-unknown", "measure-space --space foo --db {d}/s.sqlite -o {d}/o.csv",
      "foo"),
    C("campaign-repeat-0", "measure-space --sample 1 --repeat 0 --db {d}/s.sqlite -o {d}/o.csv",
      "repeat"),
    C("campaign-pin-cpu-99", f"measure-space {SAMPLE1} --pin-cpu 99 --db {{d}}/s.sqlite "
      "-o {d}/o.csv", "pin", "99"),
    C("lut-threads-0", f"lut build --sample 1 --threads 0 {QUICK} --calibrate 0 --rounds 1 "
      "--db {d}/l.sqlite", "threads"),
    C("lut-calibrate-neg", f"lut build {SAMPLE1} --calibrate -1 --rounds 1 --db {{d}}/l.sqlite",
      "--calibrate"),
    C("lut-rounds-0", f"lut build {SAMPLE1} --calibrate 0 --rounds 0 --db {{d}}/l.sqlite",
      "--rounds"),
    C("lut-rules-unknown", f"lut build {SAMPLE1} --calibrate 0 --rounds 1 --rules nope "
      "--db {d}/l.sqlite", "nope"),
    C("lut-refit-terms", "lut refit --terms foo {d}/ort.lut.sqlite", "foo"),
    C("space-unknown", "archs --space foo", "foo"),
    C("space-models-empty", "archs --space models:", "models"),
    C("space-models-missing", "archs --space models:/nonexistent_h8", "/nonexistent_h8"),
    C("space-models-file", "archs --space models:{d}/tiny.onnx", "tiny.onnx"),
    C("space-models-no-onnx", "archs --space models:{d}/models_none", "models_none"),
    C("space-models-link-out", "archs --space models:{d}/models_link", "models_link",
      "outside.onnx"),
    C("sample-huge-fbnet", "archs --space fbnet --sample 1000000000000", "--sample"),
    C("dataset-nb201", "archs --space nb201 --dataset ImageNet --sample 1", "ImageNet"),
    C("dataset-fbnet", "archs --space fbnet --dataset cifar10 --sample 1", "cifar10"),
    C("dataset-models", "estimate flops --space models:{d}/models_ok --dataset cifar10 "
      "-o {d}/o.csv", "--dataset"),
    C("fbnet-21-blocks", "info --space fbnet " + "|".join(["k3_e1"] * 21), "21"),
    C("fbnet-unknown-block", "info --space fbnet " + "|".join(["k9_e9"] + ["k3_e1"] * 21),
      "k9_e9"),
    C("fbnet-index-9", "info --space fbnet " + ",".join(["0"] * 21 + ["9"]), "9"),
    C("nb201-malformed", "info '|nor_conv_3x3~0|+|nor_conv_3x3~0|'", "nor_conv_3x3~0"),
    C("nb201-unknown-op", "info '|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|'",
      "conv_5x5"),
    C("nb201-index-out-of-range", "info 15625", "15625"),
    C("export-wrong-space", "export 1462 --space fbnet -o {d}/o.onnx", "1462"),
    C("backend-unknown", "estimate nope --sample 1 -o {d}/o.csv", "nope"),
    C("backend-lut-no-path", "estimate lut: --sample 1 -o {d}/o.csv", "lut"),
    C("backend-roofline-missing", "estimate roofline:nonexistent_h8 --sample 1 -o {d}/o.csv",
      "nonexistent_h8"),
    C("backend-eyeriss-missing", "estimate eyeriss:nonexistent_h8 --sample 1 -o {d}/o.csv",
      "nonexistent_h8"),
    C("layers-backend-unknown", "roofline layers 1462 --backend nope", "nope"),
    C("shape-letters", "info {d}/dyn.onnx --input-shape 1xAx3", "1xAx3"),
    C("shape-zero", "info {d}/dyn.onnx --input-shape 0x3x2x2", "0x3x2x2"),
    C("shape-mixed", "info {d}/dyn.onnx --input-shape x=1x3x8x8 --input-shape 1x3x8x8",
      "--input-shape"),
    C("shape-contradicts-static", "info {d}/tiny.onnx --input-shape 1x3x32x32", "x", "16"),
    C("shape-unknown-input", "info {d}/tiny.onnx --input-shape nope=1x3x16x16", "nope"),
    C("shape-wrong-rank", "info {d}/dyn.onnx --input-shape 1x3x8", "1x3x8"),
    C("fit-limit-0", "fit gbdt --train {d}/good.csv --limit 0 -o {d}/m", "--limit"),
    C("select-k-0", "select 0 --sample 20 -o {d}/c.csv", "K"),
    C("select-too-many", "select 30 --sample 20 -o {d}/c.csv", "30", "20"),
    C("select-fbnet-no-candidates", "select 3 --space fbnet -o {d}/c.csv", "--archs"),
    C("select-missing-source", "select 3 --source {d}/nope.csv -o {d}/c.csv", "nope.csv"),
    C("select-foreign-source", "select 3 --source {d}/tiny.onnx -o {d}/c.csv", "tiny.onnx"),
    C("fit-batch-0", "fit gbdt --train {d}/good.csv --batch 0 -o {d}/m", "--batch"),
    C("fewshot-seeds-0", "fewshot --target {d}/good.csv --model flops --samples 5 --seeds 0 "
      "-o {d}/c.csv", "--seeds"),
    C("fewshot-samples-0", "fewshot --target {d}/good.csv --model flops --samples 0,5 "
      "-o {d}/c.csv", "--samples"),
    C("compare-max-cells-0", "compare --truth {d}/good.csv flops --max-cells 0 -o {d}/r",
      "--max-cells"),
    C("demo-train-0", "demo --train 0 --out {d}/r", "--train"),
    C("demo-train-too-big", "demo --sample 2 --train 2 --out {d}/r", "--train"),
    C("calibrate-repeats-0", "roofline calibrate --repeats 0 -o {d}/x.toml", "--repeats",
      sub=True, timeout_s=20),
    C("calibrate-cpu-99", "roofline calibrate --cpu 99 --repeats 1 -o {d}/x.toml", "--cpu",
      sub=True, timeout_s=20),
    C("calibrate-cpu-abc", "roofline calibrate --cpu abc --repeats 1 -o {d}/x.toml", "--cpu"),
    C("unknown-command", "frobnicate", "frobnicate"),
    C("unknown-option", "archs --frob", "--frob", sub=True),
    C("dataset-unknown", "info 1462 --dataset cifar11", "cifar11"),
    C("best-effort-not-lut", "estimate flops --best-effort --sample 1 -o {d}/o.csv",
      "--best-effort"),
    C("lut-spec-option", "estimate 'lut:{d}/ort.lut.sqlite?bogus=1' --sample 1 -o {d}/o.csv",
      "bogus"),
    C("table-spec-option", "estimate 'table:{d}/good.csv?duplicates=bogus' --sample 1 "
      "-o {d}/o.csv", "bogus"),
    C("hybrid-without-prior", "fit hybrid --train {d}/good.csv -o {d}/m", "--prior"),
    C("fewshot-samples-abc", "fewshot --target {d}/good.csv --samples abc -o {d}/c.csv",
      "--samples"),
    C("compare-backend-unknown", "compare --truth {d}/good.csv nope -o {d}/r", "nope"),
    C("compare-truth-empty-path", "compare --truth '' eyeriss -o {d}/r", "empty path"),
    # a device as an input: /dev/zero never ends (it was read until the OOM killer came)
    C("table-archs-device", "archs --archs /dev/zero", "/dev/zero", "a device"),
    C("table-truth-device", "compare --truth /dev/zero flops -o {d}/r", "/dev/zero", "a device"),
    C("onnx-device", "info /dev/zero", "/dev/zero", "a device"),
    C("rules-device", "lut build --rules /dev/zero --db {d}/l.sqlite --sample 1", "/dev/zero"),
    C("spec-device", "estimate roofline:/dev/zero --sample 2 -o {d}/b.csv", "/dev/zero",
      "a device"),
    C("lut-refit-empty-path", "lut refit ''", "empty path"),
    C("space-empty", "archs --space '' --sample 2", "unknown search space"),
    C("input-shape-empty-name", "estimate flops --input-shape =1x3 --sample 2 -o {d}/s.csv",
      "--input-shape", "empty"),
    C("group-without-command", "lut", "needs a command", "build"),
    C("estimate-archs-empty-path", "estimate flops --archs '' -o {d}/e.csv", "empty path"),
    C("compare-learned-unfitted", "compare --truth {d}/good.csv flops gbdt -o {d}/r", "gbdt",
      "--train-samples"),
    C("compare-transfer-no-source", "compare --truth {d}/good.csv flops transfer "
      "--train-samples 5 -o {d}/r", "transfer", "--source"),
    C("compare-hybrid-no-prior", "compare --truth {d}/good.csv hybrid --train-samples 5 "
      "-o {d}/r", "hybrid", "--prior"),
    C("compare-models-missing", "compare --truth {d}/good.csv flops --models {d}/nomodels "
      "-o {d}/r", "nomodels"),
    C("tvm-tasks-space-unknown", "tvm tasks --space foo", "foo"),
    C("tvm-tasks-sample-0", "tvm tasks --sample 0", "--sample"),
    C("tvm-tune-threads-0", "tvm tune --sample 1 --trials-per-task 2 --threads 0 "
      "--work-dir {d}/w", "threads"),
    C("tvm-tune-trials-neg", "tvm tune --sample 1 --trials-per-task -1 --work-dir {d}/w",
      "--trials-per-task", sub=True, timeout_s=6),
    C("tvm-tune-work-dir-file", "tvm tune --sample 1 --trials-per-task 2 "
      "--work-dir {d}/afile.txt", "afile.txt", sub=True, timeout_s=6),
    C("tvm-target-nonsense", "tvm target --target 'nonsense{'", "nonsense{"),
    C("tvm-target-cores-neg", "tvm target --target 'llvm -num-cores=-4'", "num-cores"),
    C("tvm-target-unknown-option", "tvm target --target 'llvm -bogus=1'", "bogus"),
    C("quality-one-table", "measure-quality {d}/good.csv", "two"),
    C("quality-png", "measure-quality {d}/good.csv {d}/png.csv", "png.csv"),
    C("quality-db-foreign", "measure-quality --db {d}/table_t.db", "table_t.db"),
    C("quality-db-missing", "measure-quality --db {d}/missing.sqlite", "missing.sqlite"),
    C("backend-table-no-path", "estimate table: --sample 1 -o {d}/o.csv", "table"),
    C("models-index-range", "info 7 --space models:{d}/models_ok", "7"),
    C("seed-abc", "archs --sample 2 --seed abc", "--seed"),
    C("compare-duplicates-bogus", "compare --truth {d}/good.csv flops --duplicates bogus "
      "-o {d}/r", "--duplicates"),
    # ------------------------------------------------------------------ tables
    C("table-missing", "compare --truth {d}/missing.csv flops -o {d}/r", "missing.csv"),
    C("table-directory", "compare --truth {d}/outdir flops -o {d}/r", "outdir"),
    C("table-empty", "compare --truth {d}/empty.csv flops -o {d}/r", "empty.csv"),
    C("table-header-only", "fit gbdt --train {d}/header_only.csv -o {d}/m", "header_only.csv"),
    C("table-wrong-header", "compare --truth {d}/wrong_header.csv flops -o {d}/r",
      "wrong_header.csv", "arch_str"),
    C("table-latin1", "estimate flops --archs {d}/latin1.csv -o {d}/o.csv", "latin1.csv:4"),
    C("table-latin1-truth", "compare --truth {d}/latin1.csv flops -o {d}/r", "latin1.csv:4",
      sub=True),
    C("table-nul", "fit gbdt --train {d}/nul.csv -o {d}/m", "nul.csv"),
    C("table-png", "compare --truth {d}/png.csv flops -o {d}/r", "png.csv"),
    C("table-nan", "compare --truth {d}/lat_nan.csv flops -o {d}/r", "lat_nan.csv:3",
      "latency_ms"),
    C("table-negative", "fit gbdt --train {d}/lat_neg.csv -o {d}/m", "lat_neg.csv:3"),
    C("table-column-twice", "compare --truth {d}/dup_column.csv flops -o {d}/r",
      "dup_column.csv:1", "latency_ms"),
    C("table-zero", "fewshot --target {d}/lat_zero.csv --model flops --samples 5 --seeds 1 "
      "-o {d}/c.csv", "lat_zero.csv:3"),
    C("table-text-latency", "compare --truth {d}/lat_text.csv flops -o {d}/r", "lat_text.csv:3",
      "latency_ms"),
    C("table-as-backend-nan", "estimate {d}/lat_nan.csv --sample 1 -o {d}/o.csv",
      "lat_nan.csv:3"),
    C("table-duplicate-compare", "compare --truth {d}/dup.csv flops -o {d}/r", "dup.csv:32"),
    C("table-duplicate-fit", "fit gbdt --train {d}/dup.csv -o {d}/m", "dup.csv:32"),
    C("table-index-mismatch", "compare --truth {d}/mismatch.csv flops -o {d}/r",
      "mismatch.csv:4", "arch_index"),
    C("table-extra-comma", "estimate flops --archs {d}/comma.csv -o {d}/o.csv", "comma.csv:4"),
    C("table-huge-line", "compare --truth {d}/huge.csv flops -o {d}/r", "huge.csv"),
    C("table-wrong-space", "fit gbdt --train {d}/fbnet_rows.csv -o {d}/m", "fbnet_rows.csv:2"),
    C("table-lut-import-bad", "lut import {d}/png.csv --db {d}/l.sqlite", "png.csv"),
    C("table-fewshot-missing", "fewshot --target {d}/missing.csv --model flops -o {d}/c.csv",
      "missing.csv"),
    C("table-demo-truth-nan", "demo --truth {d}/lat_nan.csv --train 5 --out {d}/r",
      "lat_nan.csv:3", sub=True, timeout_s=60),
    C("table-source-bad", "fit transfer --train {d}/good.csv --source {d}/lat_text.csv -o {d}/m",
      "lat_text.csv:3"),
    C("table-archs-wrong-header", "archs --archs {d}/wrong_header.csv", "wrong_header.csv"),
    C("table-archs-header-only", "archs --archs {d}/header_only.csv", "header_only.csv"),
    C("table-campaign-archs-png", f"measure-space --archs {{d}}/png.csv {QUICK} "
      "--db {d}/s.sqlite -o {d}/o.csv", "png.csv"),
    C("table-truth-wrong-space", "compare --space models:{d}/models_ok --truth {d}/good.csv "
      "flops -o {d}/r", "good.csv:2"),
    C("table-fit-wrong-space", "fit gbdt --space fbnet --train {d}/good.csv -o {d}/m",
      "good.csv:2"),
    C("table-compare-source-nan", "compare --truth {d}/good.csv transfer --train-samples 5 "
      "--source {d}/lat_nan.csv -o {d}/r", "lat_nan.csv:3"),
    C("table-compare-curve-png", "compare --truth {d}/good.csv flops --curve {d}/png.csv "
      "-o {d}/r", "png.csv"),
    C("table-archs-index-range", "archs --archs {d}/idx_range.csv", "idx_range.csv:2"),
    C("table-archs-index-text", "archs --archs {d}/idx_text.csv", "idx_text.csv:2"),
    C("spec-toml-syntax", "estimate roofline:{d}/bad_syntax.toml --sample 1 -o {d}/o.csv",
      "bad_syntax.toml"),
    C("spec-toml-fields", "estimate roofline:{d}/bad_fields.toml --sample 1 -o {d}/o.csv",
      "bad_fields.toml"),
    C("spec-toml-eyeriss", "roofline layers 1462 --backend eyeriss:{d}/bad_syntax.toml",
      "bad_syntax.toml"),
    C("spec-binary", "estimate fpga:{d}/png.csv --sample 1 -o {d}/o.csv", "png.csv"),
    # ------------------------------------------------------------------ model files
    C("onnx-truncated", "info {d}/trunc.onnx", "trunc.onnx", sub=True),
    C("onnx-random", "info {d}/random.onnx", "random.onnx"),
    C("onnx-empty", "info {d}/empty.onnx", "empty.onnx"),
    C("onnx-text", "info {d}/text.onnx", "text.onnx"),
    C("onnx-if-node", "info {d}/ifnode.onnx", "choose_branch", "If"),
    C("onnx-if-node-layers", "roofline layers {d}/ifnode.onnx", "choose_branch", "If"),
    C("onnx-dynamic", "info {d}/dyn.onnx", "'x'", "--input-shape"),
    C("onnx-dynamic-measure", f"measure {{d}}/dyn.onnx {QUICK}", "x", "--input-shape"),
    C("onnx-directory", "info {d}/dir.onnx", "dir.onnx"),
    C("onnx-missing", "info {d}/missing.onnx", "missing.onnx"),
    C("onnx-truncated-measure", f"measure {{d}}/trunc.onnx {QUICK}", "trunc.onnx"),
    C("onnx-layers-truncated", "roofline layers {d}/trunc.onnx --backend eyeriss", "trunc.onnx"),
    # ------------------------------------------------------------------ stores and LUTs
    C("store-not-sqlite", f"measure-space {SAMPLE1} --db {{d}}/notsqlite.db -o {{d}}/o.csv",
      "notsqlite.db"),
    C("store-empty-file", f"measure-space {SAMPLE1} --db {{d}}/emptyfile.db -o {{d}}/o.csv",
      "emptyfile.db"),
    C("store-table-t", f"measure-space {SAMPLE1} --db {{d}}/table_t.db -o {{d}}/o.csv",
      "table_t.db", sub=True),
    C("store-view-only", f"measure-space {SAMPLE1} --db {{d}}/view_only.db -o {{d}}/o.csv",
      "view_only.db"),
    C("store-user-version", f"measure-space {SAMPLE1} --db {{d}}/user_version.db "
      "-o {d}/o.csv", "user_version.db"),
    C("store-no-tables", f"measure-space {SAMPLE1} --db {{d}}/no_tables.db -o {{d}}/o.csv",
      "no_tables.db"),
    C("store-is-a-lut", f"measure-space {SAMPLE1} --db {{d}}/ort.lut.sqlite -o {{d}}/o.csv",
      "ort.lut.sqlite"),
    C("store-is-a-dir", f"measure-space {SAMPLE1} --db {{d}}/outdir -o {{d}}/o.csv", "outdir"),
    C("lut-is-a-store", "estimate lut:{d}/store.sqlite --sample 1 -o {d}/o.csv", "store.sqlite"),
    C("lut-not-sqlite", "estimate lut:{d}/notsqlite.db --sample 1 -o {d}/o.csv", "notsqlite.db"),
    C("lut-empty-file", "estimate lut:{d}/emptyfile.db --sample 1 -o {d}/o.csv", "emptyfile.db"),
    C("lut-missing", "estimate lut:{d}/missing.sqlite --sample 1 -o {d}/o.csv", "missing.sqlite"),
    C("lut-table-t", "estimate lut:{d}/table_t.db --sample 1 -o {d}/o.csv", "table_t.db"),
    C("lut-show-view", "lut show {d}/view_only.db", "view_only.db"),
    C("lut-show-store", "lut show {d}/store.sqlite", "store.sqlite"),
    C("lut-show-no-tables", "lut show {d}/no_tables.db", "no_tables.db"),
    C("lut-export-user-version", "lut export {d}/user_version.db -o {d}/o.csv",
      "user_version.db"),
    C("lut-merge-into-foreign", "lut merge --into {d}/table_t.db {d}/ort.lut.sqlite",
      "table_t.db"),
    C("lut-merge-from-foreign", "lut merge --into {d}/ort.lut.sqlite {d}/table_t.db",
      "table_t.db", sub=True),
    C("lut-refit-no-tables", "lut refit {d}/no_tables.db", "no_tables.db"),
    C("lut-import-into-foreign", "lut import {d}/lut_entries.csv --db {d}/table_t.db", "table_t.db"),
    C("lut-import-wrong-runtime", "lut import {d}/lut_entries.csv --db {d}/ort.lut.sqlite --runtime tvm",
      "ort.lut.sqlite"),
    C("lut-build-wrong-runtime", f"lut build {SAMPLE1} --calibrate 0 --rounds 1 --runtime tvm "
      "--db {d}/ort.lut.sqlite", "ort.lut.sqlite", sub=True, timeout_s=90),
    C("lut-build-into-store", f"lut build {SAMPLE1} --calibrate 0 --rounds 1 "
      "--db {d}/store.sqlite", "store.sqlite"),
    C("lut-show-missing", "lut show {d}/missing.sqlite", "missing.sqlite"),
    C("lut-merge-into-missing", "lut merge --into {d}/missing.sqlite {d}/ort.lut.sqlite",
      "missing.sqlite"),
    C("lut-refit-empty-file", "lut refit {d}/emptyfile.db", "emptyfile.db"),
    # ------------------------------------------------------------------ saved model dirs
    C("model-dir-missing", "estimate gbdt:{d}/nomodel --sample 1 -o {d}/o.csv", "nomodel"),
    C("model-dir-is-a-file", "estimate fewshot:{d}/good.csv --sample 1 -o {d}/o.csv",
      "good.csv", "is a file"),
    C("model-dir-empty", "estimate gbdt:{d}/emptydir --sample 1 -o {d}/o.csv", "emptydir"),
    C("model-dir-gnn-empty", "estimate gnn:{d}/emptydir --sample 1 -o {d}/o.csv", "emptydir"),
    C("manifest-not-json", "estimate gbdt:{d}/m_notjson --sample 1 -o {d}/o.csv",
      "m_notjson", "manifest", not_in_output=("SECRET-CONTENT-H8",)),
    C("manifest-escapes-dir", "estimate gbdt:{d}/m_escape --sample 1 -o {d}/o.csv",
      "m_escape", "files"),
    C("manifest-edited-param", "estimate gbdt:{d}/m_param --sample 1 -o {d}/o.csv", "m_param"),
    C("manifest-imports-module", "estimate gbdt:{d}/m_import --sample 1 -o {d}/o.csv",
      "m_import", "libraries", sub=True, env={"PYTHONPATH": "{d}/pylib", "H8_MARKER_DIR": "{d}"}),
    C("manifest-imports-unsealed", "estimate gbdt:{d}/m_import_raw --sample 1 -o {d}/o.csv",
      "m_import_raw", sub=True, env={"PYTHONPATH": "{d}/pylib", "H8_MARKER_DIR": "{d}"}),
    C("manifest-class-module", "estimate gbdt:{d}/m_class --sample 1 -o {d}/o.csv",
      "m_class", sub=True, env={"PYTHONPATH": "{d}/pylib", "H8_MARKER_DIR": "{d}"}),
    C("manifest-wrong-class", "estimate gnn:{d}/m_ok --sample 1 -o {d}/o.csv", "m_ok"),
    C("manifest-model-file-edited", "estimate gbdt:{d}/m_file --sample 1 -o {d}/o.csv",
      "m_file"),
    # ------------------------------------------------------------------ outputs
    C("out-proc", "estimate flops --sample 1 -o /proc/h8_x.csv", "/proc/h8_x.csv"),
    C("out-is-dir", "estimate flops --sample 1 -o {d}/outdir", "outdir"),
    C("model-defines-a-tensor-twice", "info {d}/dup_output.onnx", "dup_output.onnx", "twice"),
    C("model-without-outputs", "info {d}/no_outputs.onnx", "no_outputs.onnx", "outputs"),
    C("layers-of-a-proxy", "roofline layers 1462 --backend flops", "--backend", "flops"),
    C("out-is-an-input-model", "estimate flops --space models:{d}/models_ok "
      "-o {d}/models_ok/a.onnx", "a.onnx", "inputs"),
    C("out-is-an-input-table", "fit gbdt --train {d}/good.csv -o {d}/good.csv", "good.csv"),
    C("out-is-a-model-file", "estimate flops --sample 1 -o {d}/tiny.onnx", "tiny.onnx",
      "binary"),
    C("space-only-a-symlink-loop", "estimate flops --space models:{d}/models_loop "
      "-o {d}/o.csv", "models_loop", "loop.onnx"),
    C("out-under-file", "estimate flops --sample 1 -o {d}/afile.txt/x.csv", "afile.txt"),
    C("out-export-proc", "export 1462 -o /proc/h8_x.onnx", "/proc/h8_x.onnx"),
    C("out-campaign-db-proc", f"measure-space {SAMPLE1} --db /proc/h8_nope/s.sqlite "
      "-o {d}/o.csv", "/proc/h8_nope"),
    C("out-campaign-o-proc", f"measure-space {SAMPLE1} --db {{d}}/s.sqlite -o /proc/h8_x.csv",
      "/proc/h8_x.csv"),
    C("out-campaign-o-dir", f"measure-space {SAMPLE1} --db {{d}}/s.sqlite -o {{d}}/outdir",
      "outdir", sub=True, timeout_s=60),
    C("out-lut-db-proc", f"lut build {SAMPLE1} --calibrate 0 --rounds 1 "
      "--db /proc/h8_l.sqlite", "/proc/h8_l.sqlite"),
    C("out-lut-db-under-file", f"lut build {SAMPLE1} --calibrate 0 --rounds 1 "
      "--db {d}/afile.txt/l.sqlite", "afile.txt"),
    C("out-fit-proc", "fit gbdt --train {d}/good.csv -o /proc/h8_m", "/proc/h8_m"),
    C("out-fit-file", "fit gbdt --train {d}/good.csv -o {d}/afile.txt", "afile.txt"),
    C("out-fewshot-proc", "fewshot --target {d}/good.csv --model flops --samples 5 --seeds 1 "
      "-o /proc/h8_c.csv", "/proc/h8_c.csv"),
    C("out-compare-proc", "compare --truth {d}/good.csv flops -o /proc/h8_r", "/proc/h8_r"),
    C("out-demo-proc", "demo --sample 3 --train 1 --out /proc/h8_r", "/proc/h8_r"),
    C("out-demo-file", "demo --sample 3 --train 1 --out {d}/afile.txt", "afile.txt"),
    C("out-calibrate-proc", "roofline calibrate --repeats 1 -o /proc/h8_x.toml",
      "/proc/h8_x.toml", sub=True, timeout_s=20),
    C("out-calibrate-dir", "roofline calibrate --repeats 1 -o {d}/outdir", "outdir",
      sub=True, timeout_s=20),
    C("out-lut-export-proc", "lut export {d}/ort.lut.sqlite -o /proc/h8_x.csv", "/proc/h8_x.csv"),
    C("out-lut-export-dir", "lut export {d}/ort.lut.sqlite -o {d}/outdir", "outdir"),
    C("out-export-dir", "export 1462 -o {d}/outdir", "outdir"),
    C("out-gen-models-file", "gen-models -o {d}/afile.txt", "afile.txt"),
]

# chmod means nothing to root: these are skipped there (see _param)
ROOT_ONLY_SKIP = {"store-read-only", "out-unwritable-dir", "lut-read-only"}
CASES += [
    # ------------------------------------------------------------------ probe of 2026-12-07
    C("compare-o-holds-truth", "compare --truth {d}/rep/predictions.csv flops -o {d}/rep",
      "predictions.csv", "inputs"),
    C("fewshot-plot-is-target", "fewshot --target {d}/fs/tgt.png --model flops --samples 5 "
      "--seeds 1 -o {d}/fs/tgt.csv", "plot", "inputs"),
    C("db-is-output", f"measure-space {SAMPLE1} --db {{d}}/new/s.sqlite -o {{d}}/new/s.sqlite",
      "--db", "-o"),
    C("lut-with-triggers", "lut merge --into {d}/trigger.lut.sqlite {d}/ort.lut.sqlite",
      "trigger.lut.sqlite", "triggers"),
    C("lut-with-triggers-read", "lut show {d}/trigger.lut.sqlite", "triggers"),
    C("init-dims-disagree", "info {d}/init_dims.onnx", "init_dims.onnx", "initializer"),
    C("init-dims-disagree-measure", f"measure {{d}}/init_dims.onnx {QUICK}", "init_dims.onnx"),
    C("models-latin1-name", "estimate flops --space models:{d}/models_latin1 -o {d}/o.csv",
      "UTF-8", "rename"),
    C("compare-curve-columns", "compare --truth {d}/good.csv flops --curve {d}/curve_cols.csv "
      "-o {d}/outdir/r", "curve_cols.csv", "k and spearman"),
    C("rules-cse-int", "lut build --sample 1 --rules {d}/rules_cse.json --db {d}/l.sqlite",
      "rules_cse.json", "cse"),
    C("seeds-huge", "fewshot --target {d}/good.csv --model flops --samples 5 "
      "--seeds 100000000000 -o {d}/c.csv", "--seeds"),
    C("repeat-huge", "measure {d}/tiny.onnx --repeat 1000000000000", "--repeat"),
    C("manifest-n-train-text", "estimate gbdt:{d}/m_ntrain --sample 1 -o {d}/o.csv",
      "m_ntrain", "n_train"),
    C("manifest-param-wrong-type", "estimate gbdt:{d}/m_ptype --sample 1 -o {d}/o.csv",
      "m_ptype", "params.max_depth", "'abc'"),
    C("manifest-unknown-field", "estimate gbdt:{d}/m_extra --sample 1 -o {d}/o.csv",
      "m_extra", "'loader'", "never writes"),
    C("manifest-nan", "estimate gbdt:{d}/m_nan --sample 1 -o {d}/o.csv", "m_nan", "NaN"),
    C("input-shape-twice", "info {d}/tiny.onnx --input-shape x=1x3x16x16 "
      "--input-shape x=1x3x8x8", "'x'", "twice"),
    C("table-short-row", "compare --truth {d}/short_row.csv flops -o {d}/outdir/r",
      "short_row.csv:3", "fewer fields"),
    C("table-fbnet-in-nb201", "compare --truth {d}/fbnet_table.csv flops -o {d}/outdir/r",
      "fbnet_table.csv", "--space fbnet"),
    C("table-tiny-latency", "compare --truth {d}/lat_tiny.csv flops -o {d}/outdir/r",
      "lat_tiny.csv", "units"),
    C("lut-refit-no-points", "lut refit {d}/nopoints.lut.sqlite", "nopoints.lut.sqlite",
      "calibration points"),
    C("lut-import-dup-key", "lut import {d}/lut_dupkey.csv --db {d}/new.sqlite",
      "lut_dupkey.csv:3", "again"),
    C("lut-import-huge", "lut import {d}/lut_huge.csv --db {d}/new.sqlite", "lut_huge.csv:2"),
    C("lut-merge-into-itself", "lut merge --into {d}/ort.lut.sqlite {d}/./ort.lut.sqlite",
      "itself"),
    C("lut-import-short-row", "lut import {d}/lut_short.csv --db {d}/new.sqlite",
      "lut_short.csv:2", "fields"),
    C("lut-import-cv-nan", "lut import {d}/lut_cv_nan.csv --db {d}/new.sqlite",
      "lut_cv_nan.csv:2", "finite"),
    C("lut-import-other-rules", "lut import {d}/lut_entries.csv --db {d}/ort.lut.sqlite "
      "--rules naive", "ort.lut.sqlite", "new --db"),
    C("compare-o-holds-lut-spec", "compare --truth {d}/good.csv -o {d}/rep_lut "
      "lut:{d}/rep_lut/metrics.csv?uncalibrated", "metrics.csv", "inputs"),
    C("const-node-dims", "info {d}/const_dims.onnx", "const_dims.onnx", "Constant node"),
    C("demo-out-holds-truth", "demo --out {d}/rep --truth {d}/rep/predictions.csv --train 5",
      "predictions.csv", "inputs"),
    C("fit-o-is-its-prior", "fit hybrid --train {d}/good.csv --prior gbdt:{d}/m_ok -o {d}/m_ok",
      "m_ok", "inputs"),
    C("spec-inf", "estimate roofline:{d}/inf.toml --sample 1 -o {d}/o.csv", "inf.toml",
      "peak_gflops", "finite"),
    C("onnx-cycle", "info {d}/cycle.onnx", "cycle.onnx", "'relu'", "cycle"),
    C("onnx-dup-node-names", "info {d}/dup_names.onnx", "dup_names.onnx", "'conv'",
      "both named"),
    C("onnx-no-opset", "info {d}/no_opset.onnx", "no_opset.onnx", "opset_import"),
    C("onnx-initializer-declared-other-shape", "info {d}/init_as_input.onnx",
      "init_as_input.onnx", "'w'", "8x3x3x3", "4x3x3x3"),
    C("unknown-arg-names-subcommand", "estimate flops {d}/tiny.onnx -o {d}/o.csv",
      "tiny.onnx", "costmodels estimate --help"),
]

CASES += [
    C("store-read-only", f"measure-space {SAMPLE1} --db {{d}}/ro_store.sqlite -o {{d}}/o.csv",
      "ro_store.sqlite"),
    C("lut-read-only", "lut import {d}/lut_entries.csv --db {d}/ro_lut.sqlite", "ro_lut.sqlite"),
    C("out-unwritable-dir", "estimate flops --sample 1 -o {d}/ro_dir/o.csv", "ro_dir"),
    # ------------------------------------------------------------------ second probe of 2026-12-07
    C("fewshot-o-is-png", "fewshot --target {d}/good.csv --model flops --samples 5 --seeds 1 "
      "-o {d}/c.png", "c.png", ".csv"),
    C("fewshot-plot-is-a-photo", "fewshot --target {d}/good.csv --model flops --samples 5 "
      "--seeds 1 -o {d}/photo/c.csv", "c.png", "did not write"),
    C("compare-o-holds-a-photo", "compare --truth {d}/good.csv flops -o {d}/photo",
      "scatter.png"),
    C("compare-o-holds-notes", "compare --truth {d}/good.csv flops -o {d}/rep_notes",
      "report.md"),
    C("compare-o-file-is-a-folder", "compare --truth {d}/good.csv flops -o {d}/rep_dir",
      "metrics.csv", "directory"),
    C("gen-models-name-is-a-folder", "gen-models -o {d}/zoo_dir", "resnet_w16_r32.onnx",
      "directory"),
    C("campaign-db-is-the-sidecar", f"measure-space {SAMPLE1} --db {{d}}/t.fingerprint.json "
      "-o {d}/t.csv", "t.fingerprint.json", "sidecar"),
    C("compare-curve-k-huge", "compare --truth {d}/good.csv flops --curve {d}/curve_k_huge.csv "
      "-o {d}/r", "curve_k_huge.csv:2", "k must"),
    C("compare-curve-rho-7", "compare --truth {d}/good.csv flops --curve {d}/curve_rho7.csv "
      "-o {d}/r", "curve_rho7.csv:2", "spearman"),
    C("lut-build-tvm-outputs", f"lut build {SAMPLE1} --runtime tvm --outputs returned "
      "--db {d}/l.sqlite", "--outputs"),
]


def _param(case: Case):
    marks = []
    if case.id in ROOT_ONLY_SKIP and ROOT_CAN_WRITE:
        marks.append(pytest.mark.skip(reason="running as root: chmod does not stop writes"))
    if case.owner:
        marks.append(pytest.mark.xfail(strict=True, reason=f"{case.owner}: {case.why}"))
    return pytest.param(case, id=case.id, marks=marks)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fitted_gbdt(tmp_path_factory):
    """A GBDT model directory written by ``costmodels fit`` on 30 measured rows."""
    d = tmp_path_factory.mktemp("fitted")
    (d / "train.csv").write_text(B._table(B.nb201_rows(30)))
    out = B.run_case(C("fit", "fit gbdt --train {d}/train.csv -o {d}/gbdt"), d,
                     tmp_path_factory.mktemp("home"))
    if out.code != 0:
        pytest.fail(f"could not fit the GBDT the manifest cases need: {out.err[-2000:]}"
                    f"{out.escaped[-2000:]}")
    return d / "gbdt"


def _model_dirs(d, fitted) -> None:
    """Model directories, each wrong in one way, copied from a real fitted one."""
    shutil.copytree(fitted, d / "m_ok")
    shutil.copytree(fitted, d / "m_notjson")
    (d / "m_notjson" / "manifest.json").write_text("{ not json SECRET-CONTENT-H8 \n")

    def escape(doc):
        doc["files"]["../../../../../../etc/passwd"] = "0" * 64

    def param(doc):
        key = next(iter(doc["params"]), None)
        assert key is not None, "the fitted manifest records no parameters"
        v = doc["params"][key]
        doc["params"][key] = (v + 1) if isinstance(v, (int, float)) and not isinstance(v, bool) \
            else ("edited" if isinstance(v, str) else 7)

    def library(doc):
        doc["libraries"]["evil_cm_mod"] = "1.0"

    def cls(doc):
        doc["class"] = "evil_cm_mod.Model"

    B.edit_manifest(fitted, d / "m_escape", escape, reseal=True)
    B.edit_manifest(fitted, d / "m_param", param)          # not resealed: the checksum says no
    B.edit_manifest(fitted, d / "m_import", library, reseal=True)
    B.edit_manifest(fitted, d / "m_import_raw", library)
    B.edit_manifest(fitted, d / "m_class", cls, reseal=True)
    B.edit_manifest(fitted, d / "m_ptype", lambda doc: doc["params"].update(max_depth="abc"),
                    reseal=True)
    B.edit_manifest(fitted, d / "m_extra", lambda doc: doc.update(loader="evil_cm_mod.load"),
                    reseal=True)
    B.edit_manifest(fitted, d / "m_ntrain", lambda doc: doc.update(n_train="thirty"),
                    reseal=True)
    B.edit_manifest(fitted, d / "m_nan", lambda doc: doc.update(n_train=float("nan")))
    shutil.copytree(fitted, d / "m_file")
    model_file = next(p for p in sorted((d / "m_file").iterdir()) if p.name != "manifest.json")
    model_file.write_bytes(model_file.read_bytes() + b" ")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Every input file, written once; each case gets its own copy."""
    d = tmp_path_factory.mktemp("template") / "case"
    B.make_fixtures(d)
    B.make_store(d / "store.sqlite")
    shutil.copy(d / "store.sqlite", d / "ro_store.sqlite")
    shutil.copy(d / "ort.lut.sqlite", d / "ro_lut.sqlite")
    (d / "ro_dir").mkdir()
    return d


@pytest.fixture
def case_dir(tmp_path, request, template):
    d = tmp_path / "case"
    shutil.copytree(template, d, symlinks=True)
    if not ROOT_CAN_WRITE:
        for name in ("ro_store.sqlite", "ro_lut.sqlite"):
            os.chmod(d / name, 0o444)
        os.chmod(d / "ro_dir", 0o555)
    case = request.node.callspec.params["case"]
    if any("{d}/m_" in a for a in case.argv):
        _model_dirs(d, request.getfixturevalue("fitted_gbdt"))
    return d


# ----------------------------------------------------------------------------- the battery
def test_battery_is_large_enough():
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.sub for c in CASES) >= 10   # a real subprocess for a good number of them


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, case_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    before = B.snapshot(case_dir)
    out = B.run_case(case, case_dir, home)
    after = B.snapshot(case_dir)
    report = (f"\n$ costmodels {shlex.join(case.args(case_dir))}\nexit {out.code} in "
              f"{out.seconds:.1f} s\n--- stderr\n{out.err[-3000:]}\n--- stdout\n{out.out[-1500:]}"
              f"\n{out.escaped[-3000:]}")
    text = out.out + out.err + out.escaped
    assert "Traceback" not in text, report
    assert out.code == case.code, report
    assert out.error_lines, "no line starting with 'error: '" + report
    assert "internal error" not in out.err, report
    err = "\n".join(out.error_lines)
    bare = [ln for ln in out.error_lines if BARE_OS_ERROR.fullmatch(ln)]
    assert not bare, "a bare OS error: the path was used unchecked, nothing says what to do" \
        + report
    for name in case.names:
        assert name in err, f"the error does not name {name!r}" + report
    for secret in case.not_in_output:
        assert secret not in text, f"the error echoes file content {secret!r}" + report
    assert not (case_dir / B.MARKER).exists(), "a module named by a manifest was imported" + report
    assert B.diff(before, after) == [], report
    noise = [ln for ln in (out.out + out.err).splitlines()
             if ln.strip() and not ln.startswith("error: ")]
    assert not noise, "it printed more than the error: work began before the input was checked" \
        + report
    if case.argv and any("/proc/h8" in a for a in case.argv):
        assert not any(p.name.startswith("h8_") for p in __import__("pathlib").Path("/proc")
                       .iterdir()), report


# ----------------------------------------------------------------------------- good twins
def test_bom_table_is_accepted(tmp_path):
    """A UTF-8 BOM is not an error: the same rows with and without one give the same result."""
    d = tmp_path / "case"
    B.make_fixtures(d)
    home = tmp_path / "home"
    home.mkdir()
    outs = []
    for name in ("good", "bom"):
        case = C(f"bom-{name}", f"estimate flops --archs {{d}}/{name}.csv -o {{d}}/{name}_out.csv")
        out = B.run_case(case, d, home)
        assert out.code == 0, out.err + out.escaped
        outs.append((d / f"{name}_out.csv").read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 31


def test_bom_truth_is_accepted_in_a_subprocess(tmp_path):
    d = tmp_path / "case"
    B.make_fixtures(d)
    home = tmp_path / "home"
    home.mkdir()
    out = B.run_case(C("bom-compare", "compare --truth {d}/bom.csv flops -o {d}/r", sub=True),
                     d, home)
    assert out.code == 0 and "Traceback" not in out.err, out.err
    assert (d / "r" / "report.md").is_file()


def test_small_truths_lists_and_odd_numbers(tmp_path, capsys):
    """Inputs that were taken and gave something wrong: a truth of 1-2 networks (every rank
    metric trivial), an arch list whose index contradicts its string or that lists a network
    twice, a latency written with Python's digit grouping, a few-shot curve whose rank metric
    is undefined (nan), a spec peak of 1e-300."""
    from costmodels.cli import main

    rows = B.nb201_rows(50)
    (tmp_path / "two.csv").write_text(B._table(rows[:2]))
    assert main(["compare", "--truth", str(tmp_path / "two.csv"), "flops",
                 "-o", str(tmp_path / "r")]) == 2
    assert "2 network(s) to score; ranking estimators needs at least 3" in \
        capsys.readouterr().err and not (tmp_path / "r").exists()
    idx, arch, _ = rows[0]
    (tmp_path / "mismatch.csv").write_text(f"arch_index,arch_str\n{(idx + 1) % 15625},{arch}\n")
    assert main(["archs", "--archs", str(tmp_path / "mismatch.csv")]) == 2
    assert f"the standard index of that architecture is {idx}" in capsys.readouterr().err
    (tmp_path / "twice.csv").write_text(B._table([*rows[:5], rows[2]]))
    assert main(["estimate", "flops", "--archs", str(tmp_path / "twice.csv"),
                 "-o", str(tmp_path / "e.csv")]) == 2
    assert "twice.csv:7: architecture listed again (first at line 4)" in capsys.readouterr().err
    (tmp_path / "grouped.csv").write_text(B._table(rows[:5]).replace(
        f",{rows[3][2]!r}", ",1_000"))
    assert "1_000" in (tmp_path / "grouped.csv").read_text()
    assert main(["compare", "--truth", str(tmp_path / "grouped.csv"), "flops",
                 "-o", str(tmp_path / "r")]) == 2
    assert "grouped.csv:5: field 'latency_ms' is not a number: '1_000'" in \
        capsys.readouterr().err
    (tmp_path / "truth.csv").write_text(B._table(rows[:10]))
    (tmp_path / "curve.csv").write_text(
        "model,target,select,k,seeds,spearman,spearman_std,kendall,mape,acc10,n_test,fit_s\n"
        "gbdt,t,random,1,1,nan,nan,nan,56.9,0.1,9,0.3\n")
    assert main(["compare", "--truth", str(tmp_path / "truth.csv"), "flops", "--curve",
                 str(tmp_path / "curve.csv"), "-o", str(tmp_path / "r")]) == 0
    assert "no rank metric is defined at any k" in capsys.readouterr().err
    spec = (B.ROOT / "analytical" / "specs" / "x86_generic.toml").read_text()
    (tmp_path / "tiny.toml").write_text(spec.replace("peak_gflops = 96.0", "peak_gflops = 1e-300"))
    assert main(["estimate", f"roofline:{tmp_path / 'tiny.toml'}", "--sample", "2",
                 "-o", str(tmp_path / "e.csv")]) == 2
    assert "field 'peak_gflops' must be >= 0.001" in capsys.readouterr().err
