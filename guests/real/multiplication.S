# summary: nested loops and `mul`: the multiplication tables 2 to 9
#
# Output: 8 lines, one per table,
#     2x1=2 2x2=4 2x3=6 2x4=8 2x5=10 2x6=12 2x7=14 2x8=16 2x9=18
#     ...
#     9x1=9 9x2=18 9x3=27 9x4=36 9x5=45 9x6=54 9x7=63 9x8=72 9x9=81
# (entries separated by one space, no trailing space), then EXIT 0.
#
# SI holds the table i (outer loop, 2..9) and DI the factor j (inner loop, 1..9): the VMM changes
# only AX, so both survive the hypercalls. `mul` multiplies AX by its operand into DX:AX.
# Numbers go out with PUTNUM, so the guest never converts to decimal itself.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $2, %si                 # i = 2
table:
    mov $1, %di                 # j = 1
entry:
    mov %si, %bx
    hypercall HC_PUTNUM         # "i"
    mov $'x', %bx
    hypercall HC_PUTCHAR        # "x"
    mov %di, %bx
    hypercall HC_PUTNUM         # "j"
    mov $'=', %bx
    hypercall HC_PUTCHAR        # "="
    mov %si, %ax
    mul %di                     # DX:AX = i * j (at most 81: DX = 0)
    mov %ax, %bx
    hypercall HC_PUTNUM         # "i*j"

    inc %di                     # j = j + 1
    cmp $9, %di
    ja end_of_line              # j > 9: the line is complete
    mov $' ', %bx               # a space between entries, none after the last one
    hypercall HC_PUTCHAR
    jmp entry

end_of_line:
    hypercall HC_NEWLINE
    inc %si                     # i = i + 1
    cmp $9, %si
    jbe table                   # while i <= 9

    xor %bx, %bx                # status 0
    hypercall HC_EXIT
