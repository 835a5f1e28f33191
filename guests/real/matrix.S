# summary: a compute kernel: 8x8 matrix product C = A * B in guest memory
#
# Output:
#     Matrix 8x8 multiplication
#     C[0][0] = 162
#     C[7][7] = 198
#     sum = 16632
# then EXIT 0.
#
# A[i][j] = (i + j) mod 10 + 1 and B[i][j] = (i - j + 8) mod 10 + 1 are first computed into memory
# (bytes, values 1..10), then C[i][j] = sum over k of A[i][k] * B[k][j] (16-bit words, at most 380),
# then the sum of all 64 elements of C (16632: still fits in 16 bits).
# The original Mini-KVM's matrix printed 0 for every element; this one really multiplies.
#
# All matrices are stored row by row: element [i][j] is at index i*8 + j.

.include "hypercall.inc"

    .equ N, 8

    .code16
    .text
    .globl _start
_start:
    # --- 1. Fill A and B. DI = i*8 + j walks over the 64 elements. -------------------------------
    xor %di, %di
    mov $10, %bl                # divisor for "mod 10"
fill:
    mov %di, %cx
    shr $3, %cx                 # CX = i = index / 8
    mov %di, %dx
    and $7, %dx                 # DX = j = index mod 8

    mov %cx, %ax
    add %dx, %ax                # AX = i + j
    div %bl                     # AL = AX / 10, AH = AX mod 10
    inc %ah
    mov %ah, mat_a(%di)         # A[i][j] = (i + j) mod 10 + 1

    mov %cx, %ax
    sub %dx, %ax
    add $8, %ax                 # AX = i - j + 8 (never negative: j <= 7)
    div %bl
    inc %ah
    mov %ah, mat_b(%di)         # B[i][j] = (i - j + 8) mod 10 + 1

    inc %di
    cmp $N*N, %di
    jb fill

    # --- 2. C = A * B. --------------------------------------------------------------------------
    # For C[i][j], SI walks along row i of A (step 1) and DI down column j of B (step N);
    # BX accumulates the dot product. BP = i*N (start of row i), DX = j.
    xor %bp, %bp                # i = 0
row:
    xor %dx, %dx                # j = 0
column:
    lea mat_a(%bp), %si         # SI -> A[i][0]
    mov %dx, %di
    add $mat_b, %di             # DI -> B[0][j]
    xor %bx, %bx                # sum = 0
    mov $N, %cx                 # k counts down N terms
dot:
    mov (%si), %al              # AL = A[i][k]
    mulb (%di)                  # AX = A[i][k] * B[k][j]  (8-bit mul: DX untouched)
    add %ax, %bx
    inc %si                     # next column of A
    add $N, %di                 # next row of B
    loop dot                    # CX = CX - 1, repeat while CX != 0

    mov %bp, %di
    add %dx, %di
    shl $1, %di                 # DI = (i*N + j) * 2: C holds words
    mov %bx, mat_c(%di)         # C[i][j] = sum

    inc %dx                     # j = j + 1
    cmp $N, %dx
    jb column
    add $N, %bp                 # i = i + 1
    cmp $N*N, %bp
    jb row

    # --- 3. Print. ------------------------------------------------------------------------------
    mov $title, %bx
    mov $title_len, %cx
    hypercall HC_WRITE          # "Matrix 8x8 multiplication\n"

    mov $label_first, %bx
    mov $label_len, %cx
    hypercall HC_WRITE          # "C[0][0] = "
    mov mat_c, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    mov $label_last, %bx
    mov $label_len, %cx
    hypercall HC_WRITE          # "C[7][7] = "
    mov mat_c + 2*(N*N - 1), %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    # Sum of all elements: lodsw loads [DS:SI] into AX and advances SI by 2.
    mov $mat_c, %si
    mov $N*N, %cx
    xor %bx, %bx
sum:
    lodsw
    add %ax, %bx
    loop sum
    mov %bx, %di                # keep the sum: the WRITE below reuses BX
    mov $label_sum, %bx
    mov $label_sum_len, %cx
    hypercall HC_WRITE          # "sum = "
    mov %di, %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE

    xor %bx, %bx                # status 0
    hypercall HC_EXIT

title:
    .ascii "Matrix 8x8 multiplication\n"
    .equ title_len, . - title
label_first:
    .ascii "C[0][0] = "
    .equ label_len, . - label_first
label_last:
    .ascii "C[7][7] = "
label_sum:
    .ascii "sum = "
    .equ label_sum_len, . - label_sum

# The matrices, after the program and its strings. real.ld keeps .bss in the flat image (as
# zeros), so this reserves 256 bytes of the image; the program overwrites them all anyway.
    .bss
mat_a:
    .skip N*N                   # bytes
mat_b:
    .skip N*N                   # bytes
    .balign 2
mat_c:
    .skip 2*N*N                 # words
