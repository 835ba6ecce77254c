// Launcher of the host emulation (see shim.h), appended after the kernels:
// emu_launch(name, blocks, threads, args) runs kernel `name` with cuLaunchKernel-style
// arguments (an array of pointers to each parameter's value). Returns 0, or 1 for an
// unknown kernel name. emu_set_order(1) runs the blocks, and the threads of kernels without
// a barrier, in reverse order (a GPU may run them in any order); emu_set_order(0) restores
// the forward order.
static int emu_order = 0;
extern "C" void emu_set_order(int order) { emu_order = order; }

template <typename... A, std::size_t... I>
static void emu_call(void (*f)(A...), void** a, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(a[I])...);
}

// Kernels with a barrier run on `threads` real threads, started once per launch: each runs
// its thread of every block in turn, and all meet at the barrier after each block, so a block
// starts only when the previous one has finished (as when each block had its own threads).
template <typename... A>
static void emu_run(void (*f)(A...), void** a, unsigned blocks, unsigned threads, bool barrier) {
    auto one = [&](unsigned b, unsigned t, std::barrier<>* bar) {
        blockIdx = {b, 0, 0};
        threadIdx = {t, 0, 0};
        blockDim = {threads, 1, 1};
        emu_barrier = bar;
        emu_call(f, a, std::index_sequence_for<A...>{});
    };
    auto block = [&](unsigned i) { return emu_order ? blocks - 1 - i : i; };
    if (!barrier) {
        for (unsigned i = 0; i < blocks; ++i)
            for (unsigned t = 0; t < threads; ++t) one(block(i), emu_order ? threads - 1 - t : t, nullptr);
        return;
    }
    std::barrier<> bar(threads);
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
            for (unsigned i = 0; i < blocks; ++i) {
                one(block(i), t, &bar);
                bar.arrive_and_wait();
            }
        });
    for (auto& t : ts) t.join();
}

extern "C" int emu_launch(const char* name, unsigned blocks, unsigned threads, void** args) {
    std::string n(name);
#define EMU_KERNEL(k, barrier)                          \
    if (n == #k) {                                      \
        emu_run(k, args, blocks, threads, barrier);     \
        return 0;                                       \
    }
    EMU_KERNEL(shift_probe, false)
    EMU_KERNEL(exit_wave, false)
    EMU_KERNEL(residual, true)
    EMU_KERNEL(gather_sums, false)
    EMU_KERNEL(probe_grad, false)
    EMU_KERNEL(probe_density, false)
    EMU_KERNEL(position_grad, true)
    EMU_KERNEL(position_curv, true)
    EMU_KERNEL(propagate, false)
    EMU_KERNEL(intensities, false)
    EMU_KERNEL(transpose_c, false)
    EMU_KERNEL(transpose_d, false)
    EMU_KERNEL(transpose_planes, false)
    EMU_KERNEL(dm_prepare, false)
    EMU_KERNEL(fourier_step, true)
    EMU_KERNEL(dm_update, false)
    EMU_KERNEL(conj_object, false)
    EMU_KERNEL(pie_delta, true)
    EMU_KERNEL(pie_probe_delta, false)
    EMU_KERNEL(pie_probe_add, false)
    EMU_KERNEL(pie_object, false)
    EMU_KERNEL(rect_get_c, false)
    EMU_KERNEL(rect_set_c, false)
    EMU_KERNEL(rect_get_d, false)
    EMU_KERNEL(rect_add_d, false)
    EMU_KERNEL(col_max_d, false)
    EMU_KERNEL(update_object, false)
    EMU_KERNEL(ratio_object, false)
    return 1;
}
