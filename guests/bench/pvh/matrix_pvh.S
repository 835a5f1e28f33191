# summary: benchmark: the matrix guest's 8x8 product, 100 times, as a PVH kernel for mini-kvm and QEMU
#
# The same computation as guests/real/matrix.S (C = A·B, A[i][j] = (i+j) mod 10 + 1,
# B[i][j] = (i-j+8) mod 10 + 1), repeated ROUNDS times in 32-bit code, so that computing, not
# starting, dominates. Prints "sum = 16632\n" (one round's sum) on the debug console and leaves
# through isa-debug-exit: exit status 1 on success, 3 if the sum is wrong.

    .equ N, 8
    .equ ROUNDS, 100

    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_entry

    .text
    .code64
    .globl _start
_start:
    hlt

    .code32
pvh_entry:
    # Fill A and B (bytes).
    xor %esi, %esi                  # i
fill_row:
    xor %edi, %edi                  # j
fill_col:
    lea (%esi, %edi), %eax          # A[i][j] = (i + j) mod 10 + 1
    call mod10_plus1
    mov %esi, %ebx
    shl $3, %ebx
    add %edi, %ebx                  # ebx = i*8 + j
    mov %al, matrix_a(%ebx)
    mov %esi, %eax                  # B[i][j] = (i - j + 8) mod 10 + 1
    sub %edi, %eax
    add $8, %eax
    call mod10_plus1
    mov %al, matrix_b(%ebx)
    inc %edi
    cmp $N, %edi
    jb fill_col
    inc %esi
    cmp $N, %esi
    jb fill_row

    mov $ROUNDS, %ebp
round:
    xor %edx, %edx                  # sum of C
    xor %esi, %esi                  # i
mul_row:
    xor %edi, %edi                  # j
mul_col:
    xor %ecx, %ecx                  # k
    xor %ebx, %ebx                  # C[i][j]
mul_k:
    mov %esi, %eax
    shl $3, %eax
    movzbl matrix_a(%eax, %ecx), %eax   # A[i][k]
    push %edx
    mov %ecx, %edx
    shl $3, %edx
    movzbl matrix_b(%edx, %edi), %edx   # B[k][j]
    imul %edx, %eax
    pop %edx
    add %eax, %ebx
    inc %ecx
    cmp $N, %ecx
    jb mul_k
    add %ebx, %edx
    inc %edi
    cmp $N, %edi
    jb mul_col
    inc %esi
    cmp $N, %esi
    jb mul_row
    dec %ebp
    jnz round

    mov $3, %bl                     # exit value 1 -> status 3 if the sum is wrong
    cmp $16632, %edx
    jne leave
    mov $message, %esi
    mov $0xe9, %dx
print:
    lodsb
    test %al, %al
    jz ok
    out %al, (%dx)
    jmp print
ok:
    xor %bl, %bl                    # exit value 0 -> status 1
leave:
    mov %bl, %al
    shr $1, %al                     # 3 -> 1 (status 3), 0 -> 0 (status 1)
    out %al, $0xf4
    hlt

# eax = eax mod 10 + 1 (eax >= 0); keeps the other registers.
mod10_plus1:
    push %edx
    push %ecx
    xor %edx, %edx
    mov $10, %ecx
    div %ecx
    lea 1(%edx), %eax
    pop %ecx
    pop %edx
    ret

message:
    .asciz "sum = 16632\n"

    .bss
matrix_a: .skip N * N
matrix_b: .skip N * N
