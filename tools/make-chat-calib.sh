#!/bin/sh
# Writes chat calibration text for alrd-compress: the model answers a fixed set of everyday prompts
# (greedy, its own chat template) and each whole turn -- system, user, assistant, end-of-turn tokens --
# is written as text, so the calibration sees the control tokens and the replies a chat user sees.
#   sh tools/make-chat-calib.sh MODEL OUT.txt [N_TOKENS=160]
# Then: alrd-compress MODEL --calib prose.txt --calib OUT.txt ... (sequences shared between the files).
set -eu
model=$1; out=$2; n=${3:-160}
run=${ALRD_RUN:-build/alrd-run}
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: > "$tmp"
while IFS= read -r q; do
    [ -n "$q" ] || continue
    "$run" "$model" --cpu --chat --transcript -p "$q" -n "$n" 2>/dev/null >> "$tmp"
done <<'PROMPTS'
Who invented the telephone?
How many days are there in a week?
Explain photosynthesis in simple terms.
Write a short poem about the sea.
What is the boiling point of water in Celsius?
Give me three tips for better sleep.
Who wrote Romeo and Juliet?
How do I make a cup of tea?
What is the largest planet in our solar system?
Translate "good morning" into Spanish.
Summarize the plot of Cinderella in two sentences.
What are the primary colors?
How does a rainbow form?
Write a Python function that adds two numbers.
What is the square root of 81?
Name three fruits that are red.
Why is the sky blue?
What is the difference between weather and climate?
How many continents are there?
Give me a recipe for a simple salad.
What does a computer's CPU do?
Tell me a fun fact about octopuses.
What is the freezing point of water in Fahrenheit?
How can I improve my writing?
What language is spoken in Brazil?
Explain what gravity is to a child.
List the planets of the solar system in order.
What is the tallest mountain in the world?
How do vaccines work?
What is 12 times 12?
Write a haiku about autumn.
Who painted the Mona Lisa?
What is the chemical symbol for gold?
How do I start learning to play the guitar?
What causes the seasons on Earth?
Suggest a name for a pet cat.
What is the largest ocean on Earth?
How many legs does a spider have?
Describe a healthy breakfast.
What is the speed of light?
PROMPTS
mv "$tmp" "$out"
trap - EXIT
echo "make-chat-calib: $out: $(wc -c < "$out") bytes of chat transcripts"
