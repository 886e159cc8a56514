# cmake -DIN=x.cu -DOUT=x.cpp -P rewrite_launches.cmake
# The GPU emulator's one source transformation: each kernel launch
#   name<<<grid, block[, shared, stream]>>>(args)  →  ::emu::launch("name", name, grid, block[, ...])(args)
# (tests/emu/cuda_emu.h). A #line directive keeps diagnostics and sanitizer reports pointing at
# the .cu file; no line is added or removed, so the line numbers stay those of the .cu file.
file(READ "${IN}" source)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*)<<<([^;]*)>>>" "::emu::launch(\"\\1\", \\1, \\2)" source "${source}")
if(source MATCHES "<<<|>>>\\(")
  message(FATAL_ERROR "${IN}: a kernel launch the emulator's rewrite does not understand")
endif()
# Thrust's CUDA system does not exist in this build: a file that uses Thrust gets its stand-in.
set(prefix "")
if(source MATCHES "thrust::")
  set(prefix "#include \"thrust_emu.h\"\n")
endif()
file(WRITE "${OUT}.tmp" "${prefix}#line 1 \"${IN}\"\n${source}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
