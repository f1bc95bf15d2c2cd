#!/bin/sh
# Regenerates the queue prompts (8 kHz, 16-bit PCM, mono WAV) with espeak-ng and sox.
# The WAVs are committed; run this only to change a prompt:
#   apt-get install -y espeak-ng sox && sh assets/prompts/generate.sh
set -eu
cd "$(dirname "$0")"
say() {
    espeak-ng -v en-us -s 150 -w /tmp/prompt.wav "$2"
    sox /tmp/prompt.wav -r 8000 -c 1 -b 16 -e signed-integer "$1.wav" silence 1 0.02 0.3% reverse silence 1 0.02 0.3% reverse pad 0 0.15 norm -3
}
for n in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 30 40 50 60 70 80 90; do
    say "number-$n" "$n"
done
say hundred "hundred"
say you-are-caller "You are caller number"
say estimated-wait "Your estimated wait time is"
say minute "minute"
say minutes "minutes"
say less-than-a-minute "less than one minute"
say thank-you-for-holding "Thank you for holding. All our agents are busy. Please stay on the line."
say press-1-for-callback "To be called back instead of waiting, press 1."
say callback-confirmed "Thank you. We will call you back when an agent is free. Goodbye."
say closed "We are closed right now. Please call again during our business hours. Goodbye."
say no-agents "Sorry, no agent can take your call right now. Please call again later. Goodbye."
say goodbye "Goodbye."
rm -f /tmp/prompt.wav
