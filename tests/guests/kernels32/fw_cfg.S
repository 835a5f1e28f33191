# summary: test kernel: reads QEMU's fw_cfg device (ports 0x510/0x511) and prints what the machine says
#
# A multiboot kernel (so that --cmdline applies). It selects each item by writing its number
# to the selector port 0x510 and reads the item's bytes, one `in` per byte, from the data port
# 0x511: numbers little-endian, the file directory big-endian (docs/specs/fw_cfg.rst in QEMU).
#
# With --mem 4M --cpus 2 --cmdline "hello fw_cfg", expected stdout:
#   "fw_cfg signature: QEMU\n"
#   "id: 1\n"
#   "cpus: 2, max cpus: 2\n"
#   "ram: 4194304 bytes (high dword 0)\n"
#   "cmdline: hello fw_cfg\n"
#   "files: 1\n"
#   "file etc/e820: 60 bytes at selector 32\n"
#   "e820: 0 KiB, 4 KiB long, type 1\n"
#   "e820: 4 KiB, 32 KiB long, type 2\n"
#   "e820: 36 KiB, 4060 KiB long, type 1\n"
# status 0.

.include "hypercall.inc"

    .equ FW_CFG_SELECTOR, 0x510
    .equ FW_CFG_DATA, 0x511

    .equ FW_CFG_SIGNATURE, 0x00
    .equ FW_CFG_ID, 0x01
    .equ FW_CFG_RAM_SIZE, 0x03
    .equ FW_CFG_NB_CPUS, 0x05
    .equ FW_CFG_MAX_CPUS, 0x0f
    .equ FW_CFG_CMDLINE_SIZE, 0x14
    .equ FW_CFG_CMDLINE_DATA, 0x15
    .equ FW_CFG_FILE_DIR, 0x19

    .equ MULTIBOOT_MAGIC, 0x1badb002
    .equ MULTIBOOT_FLAGS, 0

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

# select ITEM: write the item number to the selector port (a 16-bit `out`). Clobbers AX, DX.
.macro select item
    mov $\item, %ax
    mov $FW_CFG_SELECTOR, %dx
    out %ax, (%dx)
.endm

# putnum: print EAX in decimal. Clobbers EAX, EBX, EDX.
.macro putnum
    mov %eax, %ebx
    hypercall HC_PUTNUM
.endm

    .code32
    .text
    .globl _start
_start:
    say32 "fw_cfg signature: "
    select FW_CFG_SIGNATURE
    mov $4, %esi
    call print_data_bytes
    hypercall HC_NEWLINE

    say32 "id: "
    select FW_CFG_ID
    call read_le32
    putnum
    hypercall HC_NEWLINE

    say32 "cpus: "
    select FW_CFG_NB_CPUS
    call read_le16
    putnum
    say32 ", max cpus: "
    select FW_CFG_MAX_CPUS
    call read_le16
    putnum
    hypercall HC_NEWLINE

    say32 "ram: "
    select FW_CFG_RAM_SIZE
    call read_le32                  # the low half of the 64-bit size...
    putnum
    say32 " bytes (high dword "
    call read_le32                  # ...and the high half
    putnum
    say32 ")\n"

    say32 "cmdline: "
    select FW_CFG_CMDLINE_SIZE
    call read_le32                  # the size counts the terminating NUL
    test %eax, %eax
    jz no_cmdline
    lea -1(%eax), %esi
    select FW_CFG_CMDLINE_DATA
    call print_data_bytes
    jmp 1f
no_cmdline:
    say32 "(none)"
1:  hypercall HC_NEWLINE

    # The file directory: a big-endian count, then 64 bytes per file.
    say32 "files: "
    select FW_CFG_FILE_DIR
    call read_be32
    mov %eax, files_left
    putnum
    hypercall HC_NEWLINE
next_file:
    cmpl $0, files_left
    je files_done
    decl files_left
    call read_be32                  # its size
    mov %eax, file_size
    call read_be16                  # its selector
    mov %eax, file_selector
    call read_be16                  # two reserved bytes
    say32 "file "
    call print_file_name
    say32 ": "
    mov file_size, %eax
    putnum
    say32 " bytes at selector "
    mov file_selector, %eax
    putnum
    hypercall HC_NEWLINE
    jmp next_file
files_done:

    # The last file listed is etc/e820 (mini-kvm has only that one): 20 bytes per entry.
    mov file_selector, %eax
    mov $FW_CFG_SELECTOR, %dx
    out %ax, (%dx)
    mov file_size, %eax
    xor %edx, %edx
    mov $20, %ecx
    div %ecx
    mov %eax, entries_left
next_entry:
    cmpl $0, entries_left
    je entries_done
    decl entries_left
    say32 "e820: "
    call read_le64_kib              # the address
    putnum
    say32 " KiB, "
    call read_le64_kib              # the length
    putnum
    say32 " KiB long, type "
    call read_le32
    putnum
    hypercall HC_NEWLINE
    jmp next_entry
entries_done:
    xor %ebx, %ebx
    hypercall HC_EXIT

# print_data_bytes: ESI bytes from the data port, each printed with PUTCHAR.
print_data_bytes:
    test %esi, %esi
    jz 2f
1:  mov $FW_CFG_DATA, %dx
    in (%dx), %al
    movzbl %al, %ebx
    hypercall HC_PUTCHAR
    dec %esi
    jnz 1b
2:  ret

# print_file_name: the 56-byte NUL-padded name from the data port; prints up to the first NUL
# but reads all 56 bytes, so that the next entry starts where it should.
print_file_name:
    mov $56, %esi
    xor %edi, %edi                  # EDI = 1 once the NUL was seen
1:  mov $FW_CFG_DATA, %dx
    in (%dx), %al
    test %al, %al
    jnz 2f
    mov $1, %edi
2:  test %edi, %edi
    jnz 3f
    movzbl %al, %ebx
    hypercall HC_PUTCHAR
3:  dec %esi
    jnz 1b
    ret

# read_le16, read_le32: the next 2 or 4 bytes of the data port, low byte first, in EAX.
# read_be16, read_be32: the same, high byte first. All clobber EAX, ECX, EDX.
read_le16:
    mov $2, %ecx
    jmp read_le
read_le32:
    mov $4, %ecx
read_le:
    push %ebx
    xor %ebx, %ebx
    push %ecx
1:  mov $FW_CFG_DATA, %dx
    in (%dx), %al
    movzbl %al, %eax
    ror $8, %ebx                    # shift the bytes so far down, then put the new one on top
    shl $24, %eax
    or %eax, %ebx
    loop 1b
    pop %ecx                        # 4 bytes: done; 2 bytes: move them down to the low half
    cmp $4, %ecx
    je 2f
    shr $16, %ebx
2:  mov %ebx, %eax
    pop %ebx
    ret

# read_le64_kib: the next 8 bytes, a little-endian 64-bit number, divided by 1024, in EAX
# (exact for the 4 KiB-aligned numbers of a memory map). Clobbers ECX, EDX, ESI.
read_le64_kib:
    call read_le32
    mov %eax, %esi
    call read_le32
    shrd $10, %eax, %esi            # ESI = (high:low) >> 10
    mov %esi, %eax
    ret

read_be16:
    mov $2, %ecx
    jmp read_be
read_be32:
    mov $4, %ecx
read_be:
    push %ebx
    xor %ebx, %ebx
1:  mov $FW_CFG_DATA, %dx
    in (%dx), %al
    shl $8, %ebx
    mov %al, %bl
    loop 1b
    mov %ebx, %eax
    pop %ebx
    ret

    .data
files_left:     .long 0
file_size:      .long 0
file_selector:  .long 0
entries_left:   .long 0
