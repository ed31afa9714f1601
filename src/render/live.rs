//! The live view of a run on a terminal (`--output human`, stdout a TTY, no
//! `CI`): one spinner line per running step with its name, elapsed time and
//! last log line; finished steps printed above the spinners with their status
//! and duration; the summary table with the run's critical path at the end
//! (see [`super::summary`] and docs/runtime.md, "Output").

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipe_runtime::Event;
use regex::Regex;

use super::duration;
use super::summary::{status_color, status_word, table, Row, RunGraph};

/// Log lines of a step kept to show under it when it fails.
const TAIL: usize = 5;
/// The widest a step name is padded to in the spinner lines.
const NAME_WIDTH: usize = 32;

/// A running (or retrying, or waiting) step and its line, when the terminal
/// has room for it (see [`Live::room`]).
struct Running {
    bar: Option<ProgressBar>,
    attempt: u32,
    /// What its line says (kept while it has no line, shown when it gets one).
    message: String,
}

pub struct Live {
    multi: MultiProgress,
    /// The line below the steps: how far the run is.
    footer: ProgressBar,
    running: HashMap<String, Running>,
    /// When each step first started in this run (retries included).
    first_start: HashMap<String, Instant>,
    tails: HashMap<String, VecDeque<String>>,
    rows: Vec<Row>,
    graph: Option<RunGraph>,
    total: usize,
    name_width: usize,
    color: bool,
}

/// Removes terminal escape sequences and control characters, so a step's
/// output cannot move the cursor or recolour the view.
fn clean(line: &str) -> String {
    static ANSI: OnceLock<Regex> = OnceLock::new();
    let re = ANSI.get_or_init(|| {
        Regex::new(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|.)").expect("regex")
    });
    re.replace_all(line, "")
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect()
}

fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl Live {
    pub fn new(color: bool) -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
        let t = if color {
            "{msg:.dim} {elapsed:.dim}"
        } else {
            "{msg} {elapsed}"
        };
        let footer = multi.add(
            ProgressBar::new_spinner()
                .with_style(ProgressStyle::with_template(t).expect("template")),
        );
        footer.enable_steady_tick(Duration::from_millis(250));
        Live {
            multi,
            footer,
            running: HashMap::new(),
            first_start: HashMap::new(),
            tails: HashMap::new(),
            rows: Vec::new(),
            graph: None,
            total: 0,
            name_width: 12,
            color,
        }
    }

    /// The plan's edges, for the critical path of the run.
    pub fn set_graph(&mut self, graph: RunGraph, longest_name: usize) {
        self.graph = Some(graph);
        self.name_width = longest_name.clamp(4, NAME_WIDTH);
    }

    /// Prints a line above the spinners.
    pub fn println(&self, s: &str) {
        if self.multi.is_hidden() {
            println!("{s}");
        } else {
            let _ = self.multi.println(s);
        }
    }

    fn style(&self) -> ProgressStyle {
        let t = if self.color {
            "{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg:.dim}"
        } else {
            "{spinner} {prefix} {elapsed:>4} {wide_msg}"
        };
        ProgressStyle::with_template(t)
            .expect("template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    fn prefix(&self, step: &str, attempt: u32) -> String {
        let name = if attempt > 1 {
            format!("{step} #{attempt}")
        } else {
            step.to_string()
        };
        format!("{:w$}", fit(&name, self.name_width), w = self.name_width)
    }

    /// How many step lines fit: the terminal's height less the footer and
    /// the line the cursor rests on. More running steps than that (`--jobs
    /// 50` in a small window) would push the footer off the screen and leave
    /// the redraw garbled; the rest wait, counted in the footer, for a line.
    fn room() -> usize {
        let (rows, _) = console::Term::stdout().size();
        usize::from(rows).saturating_sub(2).max(1)
    }

    /// A step's spinner line, styled and named before it is shown, so no
    /// frame lacks its name.
    fn make_bar(&mut self, step: &str, attempt: u32, message: &str) -> ProgressBar {
        let since = self
            .first_start
            .entry(step.to_string())
            .or_insert_with(Instant::now)
            .elapsed();
        let bar = ProgressBar::new_spinner()
            .with_elapsed(since)
            .with_style(self.style())
            .with_prefix(self.prefix(step, attempt))
            .with_message(message.to_string());
        let bar = self.multi.insert_before(&self.footer, bar);
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// Sets what a running step's line says; the step gets a line when it
    /// first runs if the terminal has room for one.
    fn show(&mut self, step: &str, attempt: u32, message: String) {
        if !self.running.contains_key(step) {
            let shown = self.running.values().filter(|r| r.bar.is_some()).count();
            let bar = (shown < Live::room()).then(|| self.make_bar(step, attempt, &message));
            self.running.insert(
                step.to_string(),
                Running {
                    bar,
                    attempt,
                    message,
                },
            );
            return;
        }
        let prefix = self.prefix(step, attempt);
        let r = self.running.get_mut(step).expect("checked above");
        if let Some(bar) = &r.bar {
            if r.attempt != attempt {
                bar.set_prefix(prefix);
            }
            bar.set_message(message.clone());
        }
        r.attempt = attempt;
        r.message = message;
    }

    /// Gives lines freed by finished steps to the longest-running steps
    /// that have none.
    fn promote(&mut self) {
        let mut shown = self.running.values().filter(|r| r.bar.is_some()).count();
        let room = Live::room();
        while shown < room {
            let next = self
                .running
                .iter()
                .filter(|(_, r)| r.bar.is_none())
                .min_by_key(|(step, _)| self.first_start.get(*step).copied())
                .map(|(step, r)| (step.clone(), r.attempt, r.message.clone()));
            let Some((step, attempt, message)) = next else {
                break;
            };
            let bar = self.make_bar(&step, attempt, &message);
            if let Some(r) = self.running.get_mut(&step) {
                r.bar = Some(bar);
            }
            shown += 1;
        }
    }

    fn update_footer(&self) {
        let hidden = self.running.values().filter(|r| r.bar.is_none()).count();
        self.footer.set_message(format!(
            "  {}/{} steps done, {} running{},",
            self.rows
                .iter()
                .filter(|r| self.graph.as_ref().is_none_or(|g| g.contains(&r.step)))
                .count(),
            self.total,
            self.running.len(),
            if hidden > 0 {
                format!(" ({hidden} not shown: the terminal is full)")
            } else {
                String::new()
            },
        ));
    }

    /// A step ended: its spinner goes, a line with its status takes its place.
    fn finish(&mut self, step: &str, word: &'static str, attempts: u32, detail: Option<String>) {
        let took = self
            .first_start
            .get(step)
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        if let Some(bar) = self.running.remove(step).and_then(|r| r.bar) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
            self.promote();
        }
        let sym = match word {
            "ok" => "✓",
            "cached" => "≡",
            "skipped" => "-",
            "warning" => "!",
            "cancelled" => "⊘",
            _ => "✗",
        };
        let (c, reset) = if self.color {
            (status_color(word), "\x1b[0m")
        } else {
            ("", "")
        };
        let mut line = format!(
            "{c}{sym}{reset} {:w$}  {c}{word:9}{reset} {:>7}",
            step,
            duration(took),
            w = self.name_width
        );
        if attempts > 1 {
            line.push_str(&format!(" (attempt {attempts})"));
        }
        if let Some(d) = detail {
            line.push_str(&format!("  {}", clean(&d)));
        }
        self.println(&line);
        if matches!(word, "failed" | "timed out" | "warning") {
            if let Some(tail) = self.tails.get(step) {
                for l in tail {
                    self.println(&format!("    │ {l}"));
                }
            }
        }
        self.tails.remove(step);
        self.rows.push(Row {
            step: step.to_string(),
            status: word,
            attempts,
            duration_ms: took,
        });
        self.update_footer();
    }

    /// Clears the spinners and prints the summary table.
    fn summary(&mut self) {
        for bar in self.running.drain().filter_map(|(_, r)| r.bar) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.footer.finish_and_clear();
        let _ = self.multi.clear();
        let t = table(&self.rows, self.graph.as_ref(), self.color);
        if !t.is_empty() {
            println!("\n{}", t.trim_end());
        }
    }

    /// Shows an event; false when it is left to the plain renderer, whose
    /// lines then go through [`Live::println`].
    pub fn emit(&mut self, e: &Event) -> bool {
        match e {
            Event::RunStarted { steps, .. } => {
                self.total = *steps;
                self.footer.reset_elapsed();
                self.update_footer();
                false
            }
            Event::StepStarted { step, attempt, .. } => {
                self.first_start
                    .entry(step.clone())
                    .or_insert_with(Instant::now);
                self.show(step, *attempt, String::new());
                self.update_footer();
                true
            }
            Event::StepLog { step, line, .. } => {
                let line = clean(line);
                let tail = self.tails.entry(step.clone()).or_default();
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                if let Some(r) = self.running.get_mut(step) {
                    r.message = format!("│ {line}");
                    if let Some(bar) = &r.bar {
                        bar.set_message(r.message.clone());
                    }
                }
                true
            }
            Event::StepRetrying {
                step,
                attempt,
                delay_ms,
                error,
                ..
            } => {
                let error = clean(error);
                self.println(&format!(
                    "↻ {:w$}  attempt {attempt} failed ({error}); retrying in {}",
                    step,
                    duration(*delay_ms),
                    w = self.name_width
                ));
                self.show(
                    step,
                    *attempt,
                    format!(
                        "retrying in {} (attempt {attempt}: {error})",
                        duration(*delay_ms)
                    ),
                );
                true
            }
            Event::StepSkipped { step, reason, .. } => {
                self.finish(step, "skipped", 0, Some(reason.clone()));
                true
            }
            Event::StepCached { step, from_run, .. } => {
                self.finish(step, "cached", 0, Some(format!("from run {from_run}")));
                true
            }
            Event::StepFinished {
                step,
                attempt,
                status,
                error,
                required,
                ..
            } => {
                self.finish(
                    step,
                    status_word(status, *required),
                    *attempt,
                    error.clone(),
                );
                true
            }
            Event::GateOpened {
                step,
                approvers,
                min_approvals,
                ..
            } => {
                self.first_start
                    .entry(step.clone())
                    .or_insert_with(Instant::now);
                let who = if *min_approvals == 1 {
                    format!("one of {}", approvers.join(", "))
                } else {
                    format!("{min_approvals} of {}", approvers.join(", "))
                };
                self.show(step, 1, format!("⏸ waiting for approval by {who}"));
                self.update_footer();
                false
            }
            // The step's own line already says `warning`.
            Event::Warning { .. } => true,
            Event::RunWaiting { .. } => {
                self.summary();
                false
            }
            Event::RunFinished {
                run,
                status,
                failed_step,
                duration_ms,
            } => {
                self.summary();
                let warnings = self.rows.iter().filter(|r| r.status == "warning").count();
                println!(
                    "{}",
                    super::run_finished_line(
                        run,
                        status,
                        *duration_ms,
                        warnings,
                        failed_step.as_deref()
                    )
                );
                true
            }
            _ => false,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // A run that ends in an error leaves no spinner behind.
        for bar in self.running.drain().filter_map(|(_, r)| r.bar) {
            bar.finish_and_clear();
        }
        self.footer.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_cannot_drive_the_terminal() {
        assert_eq!(
            clean("\x1b[31mred\x1b[0m\tand\x1b]0;title\x07 \x1b[2Kbell\x07"),
            "red and bell"
        );
    }
}
