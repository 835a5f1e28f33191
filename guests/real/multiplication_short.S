# summary: a loop and `mul`: the multiplication table of 2 on one line
#
# Output: "2x1=2 2x2=4 2x3=6 2x4=8 2x5=10 2x6=12 2x7=14 2x8=16 2x9=18\n", then EXIT 0.
#
# The inner loop of `multiplication` on its own. DI holds the factor j (1..9); the VMM changes
# only AX, so DI survives the hypercalls. `mul` multiplies AX by its operand into DX:AX.

.include "hypercall.inc"

    .equ TABLE, 2

    .code16
    .text
    .globl _start
_start:
    mov $1, %di                 # j = 1
entry:
    mov $TABLE, %bx
    hypercall HC_PUTNUM         # "2"
    mov $'x', %bx
    hypercall HC_PUTCHAR        # "x"
    mov %di, %bx
    hypercall HC_PUTNUM         # "j"
    mov $'=', %bx
    hypercall HC_PUTCHAR        # "="
    mov $TABLE, %ax
    mul %di                     # DX:AX = 2 * j
    mov %ax, %bx
    hypercall HC_PUTNUM         # "2*j"

    inc %di                     # j = j + 1
    cmp $9, %di
    ja done                     # j > 9: the line is complete
    mov $' ', %bx               # a space between entries, none after the last one
    hypercall HC_PUTCHAR
    jmp entry

done:
    hypercall HC_NEWLINE
    xor %bx, %bx                # status 0
    hypercall HC_EXIT
