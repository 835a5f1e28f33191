# summary: 16-bit arithmetic: the first 15 Fibonacci numbers
#
# Output: "Fibonacci: 0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377\n", then EXIT 0.
#
# Two registers hold consecutive terms, F(n) in SI and F(n+1) in DI; each step replaces them by
# F(n+1) and F(n) + F(n+1). F(14) = 377 fits easily in 16 bits (F(24) = 46368 is the last that does).

.include "hypercall.inc"

    .equ COUNT, 15

    .code16
    .text
    .globl _start
_start:
    mov $title, %bx
    mov $title_len, %cx
    hypercall HC_WRITE          # "Fibonacci: "

    xor %si, %si                # F(0) = 0
    mov $1, %di                 # F(1) = 1
    mov $COUNT, %bp             # terms left to print
next_term:
    mov %si, %bx
    hypercall HC_PUTNUM         # print F(n)
    dec %bp
    jz done                     # that was the last one: no separator after it

    mov $separator, %bx
    mov $separator_len, %cx
    hypercall HC_WRITE          # ", "

    mov %si, %ax
    add %di, %ax                # AX = F(n) + F(n+1) = F(n+2)
    mov %di, %si                # F(n)   <- F(n+1)
    mov %ax, %di                # F(n+1) <- F(n+2)
    jmp next_term

done:
    hypercall HC_NEWLINE
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

title:
    .ascii "Fibonacci: "
    .equ title_len, . - title
separator:
    .ascii ", "
    .equ separator_len, . - separator
