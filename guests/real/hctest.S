# summary: hypercall tour: EXIT, PUTCHAR, PUTNUM, NEWLINE and WRITE
#
# Output: "Hello!\n42\n1234\nwritten in one exit\n", then EXIT 0.
#
# Uses every hypercall of the original Mini-KVM (0x00-0x03) plus WRITE (0x05), so it shows the
# difference in cost: "Hello!" needs one VM exit per character with PUTCHAR, while WRITE hands the
# VMM a whole buffer (pointer in BX, length in CX) in a single exit.
#
# The original Mini-KVM's hctest died on call 0x03: its VMM did not implement NEWLINE. Here every
# call is answered, and AX holds the result (0 for PUTCHAR/PUTNUM/NEWLINE, the byte count for WRITE).

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    # "Hello!" one character at a time: PUTCHAR takes the character in BL.
    mov $hello, %si             # DS:SI -> "Hello!" (DS = CS = 0x1000)
next_char:
    lodsb                       # AL = [DS:SI++]
    test %al, %al               # zero byte: end of the string
    jz hello_done
    mov %al, %bl
    hypercall HC_PUTCHAR        # one VM exit per character
    jmp next_char
hello_done:
    hypercall HC_NEWLINE

    # Numbers are printed in decimal by the VMM: the guest needs no conversion code.
    mov $42, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    mov $1234, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    # A whole buffer, newline included, in one VM exit.
    mov $message, %bx           # arg0: pointer (an offset in DS; the VMM adds the DS base)
    mov $message_len, %cx       # arg1: length in bytes
    hypercall HC_WRITE

    xor %bx, %bx                # status 0
    hypercall HC_EXIT

hello:
    .asciz "Hello!"
message:
    .ascii "written in one exit\n"
    .equ message_len, . - message
