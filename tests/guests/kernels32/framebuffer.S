# summary: test kernel: multiboot v1 with a linear framebuffer (header flag 2), drawn from the
# information's framebuffer fields
#
# A hobby kernel that wants graphics asks its loader for them: header flag 2, and the mode fields (linear graphics, 64x48, 32 bits per pixel).
# mini-kvm (with a display) switches the Bochs VBE adapter to that mode and puts the framebuffer's
# address, pitch, size and pixel layout in the multiboot information (flag 12).
#
# The kernel draws from the information alone: the left half red, the right half green, and a
# blue square of 8x8 pixels at the top left of the right half. Then it prints what it was given:
#   "framebuffer 64x48x32 at 3758096384, pitch 256\n"   and exits 0.
# Without flag 12 in the information it exits 3.

.include "hypercall.inc"

    .equ MULTIBOOT_MAGIC, 0x1badb002
    .equ MULTIBOOT_FLAGS, 1 << 2            # bit 2: we want a video mode
    .equ INFO_FRAMEBUFFER, 1 << 12

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)
    .long 0, 0, 0, 0, 0                     # the address fields (flag 16 is off: unused)
    .long 0                                 # mode_type 0: linear graphics
    .long 64, 48, 32                        # width, height, depth

    .code32
    .text
    .globl _start
_start:
    testl $INFO_FRAMEBUFFER, (%ebx)
    jz no_framebuffer
    mov %ebx, %ebp                          # EBP: the multiboot information
    mov 88(%ebp), %edi                      # framebuffer_addr (its low 32 bits)

    # Every row: red up to width / 2, green after.
    xor %esi, %esi                          # ESI: the row
row:
    mov %esi, %eax
    imul 96(%ebp), %eax                     # framebuffer_pitch
    lea (%edi,%eax), %edx                   # EDX: the row's first pixel
    xor %ecx, %ecx                          # ECX: the column
column:
    mov $0xff0000, %eax                     # red
    mov 100(%ebp), %ebx                     # framebuffer_width
    shr $1, %ebx
    cmp %ebx, %ecx
    jb 1f
    mov $0x00ff00, %eax                     # green
    # The blue square: rows 0-7, columns width/2 to width/2 + 7.
    cmp $8, %esi
    jae 1f
    add $8, %ebx
    cmp %ebx, %ecx
    jae 1f
    mov $0x0000ff, %eax
1:  mov %eax, (%edx,%ecx,4)
    inc %ecx
    cmp 100(%ebp), %ecx
    jb column
    inc %esi
    cmp 104(%ebp), %esi                     # framebuffer_height
    jb row

    say32 "framebuffer "
    mov 100(%ebp), %ebx
    hypercall HC_PUTNUM
    mov $'x', %ebx
    hypercall HC_PUTCHAR
    mov 104(%ebp), %ebx
    hypercall HC_PUTNUM
    mov $'x', %ebx
    hypercall HC_PUTCHAR
    movzbl 108(%ebp), %ebx                  # framebuffer_bpp
    hypercall HC_PUTNUM
    say32 " at "
    mov 88(%ebp), %ebx
    hypercall HC_PUTNUM
    say32 ", pitch "
    mov 96(%ebp), %ebx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    xor %ebx, %ebx
    hypercall HC_EXIT

no_framebuffer:
    mov $3, %ebx
    hypercall HC_EXIT
