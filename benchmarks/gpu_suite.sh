#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md in one go, without DVC (random weights, synthetic JPEGs):
#   benchmarks/gpu_suite.sh RESULTS_FOLDER [extract|workers|student ...]
# appends one JSON line per configuration to RESULTS_FOLDER/results_{extract,student}_gpu.jsonl.
# About 4 minutes each part on one H100 with 16 CPU cores.
set -euo pipefail
out=$(realpath "${1:?a folder for the results}")
shift
parts=("${@:-extract student}")
cd "$(dirname "$0")"
export PYTHONPATH=../src PYTHONUNBUFFERED=1
workers=$(($(nproc) - 2))

extract() {
    python extract_throughput.py --device cuda --images 480 --workers "$workers" --repeats 1 "$@" |
        tee -a "$out/results_extract_gpu.jsonl"
}
student() {
    python student_throughput.py --device cuda --images 768 --workers "$workers" --cycles 4 "$@" |
        tee -a "$out/results_student_gpu.jsonl"
}

for part in ${parts[*]}; do
    case $part in
    extract)
        extract --backbone resnext101_32x8d --precision bf16 --channels-last --decode gpu --batch-size 32 --cycles 8
        extract --backbone tf_efficientnet_lite0 --precision bf16 --channels-last --decode gpu --batch-size 32 --cycles 8
        extract --backbone resnext101_32x8d --precision bf16 --channels-last --decode cpu --batch-size 32 --cycles 8
        extract --backbone resnext101_32x8d --precision fp32 --decode gpu --batch-size 16 --cycles 8
        extract --backbone resnetv2_152x4_bit.goog_in21k_ft_in1k --precision bf16 --channels-last --decode gpu \
            --batch-size 16 --cycles 2
        ;;
    workers)  # run C: fewer loader workers leave cores to the main process's threads
        for count in 6 10; do
            workers=$count extract --backbone resnext101_32x8d --precision bf16 --channels-last --decode cpu \
                --batch-size 32 --cycles 8
        done
        workers=4 extract --backbone resnext101_32x8d --precision bf16 --channels-last --decode gpu \
            --batch-size 32 --cycles 8
        ;;
    student)
        student --backbone resnext101_32x8d --precision bf16 --batch-size 64
        student --backbone tf_efficientnet_lite0 --precision bf16 --batch-size 64
        student --backbone resnext101_32x8d --precision bf16 --batch-size 16
        student --backbone resnext101_32x8d --precision fp32 --batch-size 16
        ;;
    *) echo "unknown part '$part' (extract, workers, student)" >&2; exit 2 ;;
    esac
done
