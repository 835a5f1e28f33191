# summary: test: GETCHAR once, then READ in 16-byte chunks until end of input
#
# Input: "xhello" (6 bytes, no newline), all available at once (a file, or a pipe written and
# closed before the guest reads).
# Expected stdout, exactly:
#     "120\ngot 5: hello\neof\n"
# Expected exit status: 0.
#
# 120 is 'x', read by GETCHAR. READ returns what is available, up to its capacity (16), and blocks
# only while nothing is: with the input all there, "hello" comes back in one READ. Then READ
# returns 0 (end of input) and the guest prints "eof". Longer inputs come back in pieces of at most
# 16 bytes: input "x" + "abcdefghijklmnopqrstuvwxyz" (27 bytes, all at once) gives
#     "120\ngot 16: abcdefghijklmnop\ngot 10: qrstuvwxyz\neof\n"
# With empty input: "65535\neof\n" (GETCHAR returns -1). If READ ever fails (an error result,
# above 16 as unsigned), the guest prints "error=N\n" and exits with status 1.

.include "hypercall.inc"

    .equ CAPACITY, 16

    .code16
    .text
    .globl _start
_start:
    hypercall HC_GETCHAR        # AX = first byte (or 0xFFFF at end of input)
    mov %ax, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

next_chunk:
    mov $buffer, %bx            # arg0: where to store
    mov $CAPACITY, %cx          # arg1: at most this many bytes
    hypercall HC_READ           # AX = bytes read, 0 at end of input
    test %ax, %ax
    jz end_of_input
    cmp $CAPACITY, %ax
    ja read_error               # negative results are above 16 as unsigned numbers
    mov %ax, %di                # DI = count (the VMM changes only AX)

    say16 "got "
    mov %di, %bx
    hypercall HC_PUTNUM
    say16 ": "
    mov $buffer, %bx
    mov %di, %cx
    hypercall HC_WRITE          # the bytes just read
    hypercall HC_NEWLINE
    jmp next_chunk

end_of_input:
    say16 "eof\n"
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

read_error:
    mov %ax, %di
    say16 "error="
    mov %di, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    mov $1, %bx
    hypercall HC_EXIT

    .bss
buffer:
    .skip CAPACITY
