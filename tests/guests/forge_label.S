# summary: test: tries to pass for another guest by rewriting its own line's label
#
# Input: none.
# Expected stdout, run alone or with --raw: the bytes below as they are. Run with other guests
# (labelled), mini-kvm must show the carriage return and the escape sequence in caret notation,
# so the line still starts with this guest's own label:
#   [1:forge_label.bin] ^M^[[2K[2:hello] Hello, KVM!
# then exit status 0.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    say16 "\r\033[2K[2:hello] Hello, KVM!\n"
    xor %bx, %bx
    hypercall HC_EXIT
