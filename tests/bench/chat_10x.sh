#!/bin/sh
# Chat answers of the 10x file (issue 18): SmolLM2 compressed with --kv-ratio 10 --hadamard on prose plus the
# model's own chat transcripts (tools/make-chat-calib.sh), against the uncompressed model, greedy --chat,
# 32 tokens, seven fact prompts not among the calibration prompts. Prints each prompt with both answers.
#   BUILD=build MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf sh tests/bench/chat_10x.sh
set -eu
B=${BUILD:-build}; M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${ALRD_DATA:-../shared/data}/wikitext-2/wiki.valid.tokens
mkdir -p out
[ -f out/chat-calib.txt ] || ALRD_RUN=$B/alrd-run sh tools/make-chat-calib.sh "$M" out/chat-calib.txt
$B/alrd-compress "$M" -o out/r10.alrd --calib "$D" --calib out/chat-calib.txt --kv-ratio 10 --hadamard \
    > out/r10.log 2>&1 || { tail -5 out/r10.log; exit 1; }
grep -E "^KV bytes" out/r10.log
for q in "What is the capital of France?" "What is the capital of Japan?" "How many legs does a spider have?" \
    "Who painted the Mona Lisa?" "What is the chemical symbol for gold?" "What is the largest ocean on Earth?" \
    "How many days are in a year?"; do
    echo "Q: $q"
    echo "  uncompressed: $($B/alrd-run "$M" --cpu --chat -p "$q" -n 32 2>/dev/null)"
    echo "  10x:          $($B/alrd-run out/r10.alrd --cpu --chat -p "$q" -n 32 2>/dev/null)"
done
