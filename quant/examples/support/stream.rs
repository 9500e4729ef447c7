//! Threads over a buffer, shared by the streaming examples (`#[path = "support/stream.rs"] mod
//! stream;`).

/// Runs `task` over every task of `map` (runs of `task_bytes`), thread `t` of `threads` taking
/// tasks `t, t + threads, …`; the sum of the results.
pub fn stream(
    map: &[u8],
    task_bytes: usize,
    threads: usize,
    task: impl Fn(&[u8]) -> f32 + Sync,
) -> f32 {
    let tasks: Vec<&[u8]> = map.chunks_exact(task_bytes.max(1)).collect();
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (tasks, task) = (&tasks, &task);
                sc.spawn(move || {
                    tasks
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|c| task(c))
                        .sum::<f32>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}
