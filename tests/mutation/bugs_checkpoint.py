"""Planted bugs in checkpoint loading and saving, the run-folder lock, the temporary-file clean-up, the
shard count of a resumed run and the shard pool (issue 15).  Run with the mutation runner
(``python tests/mutation/run.py --only checkpoint.``); each bug was also applied by hand, its tests run
and seen to fail, and the code restored.

Each bug is one plausible slip: a guard dropped, a condition inverted, a name made shared again.
Not here: the fork guards of the shard pool.  They are layered (``register_at_fork`` forgets the parent's
pools in the child; ``get_pool`` and ``close`` check the owner's pid; a parent's helper is not the child's
child, so ``alive()`` is false there), and dropping any one of them alone was tried and is not a bug: the
child still starts its own pool (tests/fast/test_reliability_shm.py).
"""

CK = "minigpt/io/checkpoint.py"
TRAIN = "minigpt/training/loop.py"
POOL = "minigpt/fast/shardpool.py"

T_CK = "tests/io/test_checkpoint.py"
T_RCK = "tests/io/test_reliability_checkpoint.py"
T_RUNS = "tests/training/test_reliability_runs.py"
T_SHM = "tests/fast/test_reliability_shm.py"
T_SHARDED = "tests/fast/test_sharded.py"
T_POOL = "tests/fast/test_shardpool.py"

BUGS = [
    # ------------------------------------------------------------------ bounded loading
    dict(id="checkpoint.load.no_member_size_guard", file=CK,
         find="        if info.file_size > limit:\n", replace="        if False:\n",
         tests=[f"{T_RCK}::test_member_size_guard_refuses_before_decompressing", f"{T_RCK}::test_a_zip_bomb_is_refused_with_little_memory"],
         why="a member's declared size is not compared with what its array needs: it is opened and its header read"),
    dict(id="checkpoint.load.no_inflation_guard", file=CK,
         find="    if total > INFLATION_FROM and total > MAX_INFLATION * packed:\n",
         replace="    if False:\n",
         tests=[f"{T_RCK}::test_a_bomb_within_a_huge_but_valid_config_is_refused_by_its_inflation",
                f"{T_RCK}::test_inflation_is_bounded_over_the_whole_archive"],
         why="the deflated arrays of a huge (valid) config may inflate without bound"),
    dict(id="checkpoint.load.no_member_count_guard", file=CK,
         find="    if len(members) > max_members:\n", replace="    if False:\n",
         tests=[f"{T_RCK}::test_member_count_guard", f"{T_RCK}::test_member_count_guard_without_a_model_config"],
         why="no limit on the number of archive members"),
    dict(id="checkpoint.load.no_duplicate_guard", file=CK,
         find="        if name in members:\n", replace="        if False:\n",
         tests=[f"{T_RCK}::test_duplicate_members_are_refused"],
         why="a member that appears twice silently replaces the first one"),
    dict(id="checkpoint.load.no_total_guard", file=CK,
         find="    if total > total_limit:\n", replace="    if False:\n",
         tests=[f"{T_RCK}::test_total_size_guard"],
         why="the archive's total declared size is not bounded"),
    dict(id="checkpoint.load.no_meta_size_guard", file=CK,
         find='    if members["__meta__"].file_size > limit:\n', replace="    if False:\n",
         tests=[f"{T_RCK}::test_meta_record_size_is_bounded"],
         why="the __meta__ record is decompressed whatever size it declares"),
    dict(id="checkpoint.load.header_shape_unchecked", file=CK,
         find="            if tuple(shape) != want[1]:\n", replace="            if False:\n",
         tests=[f"{T_RCK}::test_npy_header_lying_about_the_shape_is_refused_before_reading_data"],
         why="a member's .npy header is not checked against the config's shape before its data is read"),
    dict(id="checkpoint.load.meta_not_first", file=CK,
         find="        _check_directory(path, members, expected)\n", replace="",
         tests=[f"{T_RCK}::test_a_zip_bomb_is_refused_with_little_memory", f"{T_RCK}::test_member_size_guard_refuses_before_decompressing"],
         why="the zip directory is never checked against the record: every limit is skipped"),
    dict(id="checkpoint.load.fifo_opened", file=CK,
         find="    if not stat.S_ISREG(os.fstat(fd).st_mode):\n", replace="    if False:\n",
         tests=[f"{T_RCK}::test_a_device_is_refused_and_eval_answers_in_one_line", f"{T_RCK}::test_a_fifo_is_refused_within_a_second"],
         why="FIFOs and devices are opened (a FIFO blocks forever)"),
    # ------------------------------------------------------------------ saving
    dict(id="checkpoint.save.temp_left_on_error", file=CK,
         find="        if os.path.exists(tmp):\n            os.unlink(tmp)\n", replace="        pass\n",
         tests=[f"{T_CK}::test_crash_during_save_keeps_the_old_file", f"{T_RCK}::test_a_full_disk_names_the_file"],
         why="a failed write leaves its temporary file behind"),
    dict(id="checkpoint.save.shared_temp_name", file=CK,
         find='prefix=f"{TEMP_PREFIX}{os.getpid()}-"', replace="prefix=TEMP_PREFIX",
         tests=[f"{T_RCK}::test_temporary_names_carry_the_process_id"],
         why="temporary names without the writer's pid: stale ones cannot be told from a live writer's"),
    dict(id="checkpoint.save.error_names_no_file", file=CK,
         find="            raise with_filename(e, path) from None\n", replace="            raise\n",
         tests=[f"{T_RCK}::test_a_full_disk_names_the_file"],
         why="'No space left on device' without the file it was writing"),
    # ------------------------------------------------------------------ one writer per folder
    dict(id="checkpoint.lock.not_taken", file=CK,
         find="        try:\n            _lock_fd(fd)\n", replace="        try:\n            pass\n",
         tests=[f"{T_RUNS}::test_a_second_writer_is_refused_at_once_naming_the_holder",
                f"{T_RUNS}::test_two_writers_started_together_one_is_refused_and_the_survivor_resumes_bitwise"],
         why="the lock file is created but never locked: two writers share a run folder"),
    dict(id="checkpoint.lock.taken_after_checks", file=TRAIN,
         find="        lock = FolderLock(out_dir)  # before anything is written into the folder\n",
         replace="        lock = type('NoLock', (), {'release': lambda self: None})()\n",
         tests=[f"{T_RUNS}::test_two_writers_started_together_one_is_refused_and_the_survivor_resumes_bitwise"],
         why="train does not lock its run folder"),
    dict(id="checkpoint.temps.live_writer_only", file=CK,
         find="        if pid is not None and pid != os.getpid() and pid_alive(pid):\n",
         replace="        if pid is None or pid_alive(pid) or True:\n",
         tests=[f"{T_RUNS}::test_stale_temporary_files_of_dead_writers_are_removed"],
         why="temporary files of dead writers are kept for ever"),
    # ------------------------------------------------------------------ resume: the shard count
    dict(id="checkpoint.resume.shards_ignored", file=TRAIN,
         find="        return stored\n    if requested != stored:", replace="        return None\n    if requested != stored:",
         tests=[f"{T_RUNS}::test_resume_uses_the_recorded_shard_count"],
         why="a resume without --threads uses 'auto' instead of the run's own shard count: not bitwise exact"),
    # ------------------------------------------------------------------ shard pool
    dict(id="checkpoint.pool.grads_into_params_block", file=POOL,
         find="                send_handle(conn, g.fd, p.pid)\n", replace="                send_handle(conn, self.params_blk.fd, p.pid)\n",
         tests=[f"{T_SHARDED}::test_sharded_step_equals_one_thread"],
         why="copy-paste slip: each helper is handed the parameter block as its gradient block"),
    dict(id="checkpoint.pool.new_inputs_not_sent", file=POOL,
         find="            new = self.inputs_blk.size\n", replace="            new = None\n",
         tests=[f"{T_POOL}::test_growing_batches_and_two_caller_threads_share_one_pool_safely"],
         why="a larger input block is made but its descriptor never reaches the helpers"),
]
