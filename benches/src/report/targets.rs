//! ringcast's performance targets checked against one results file. Every check names the rows
//! it used, so that a miss on a saturated machine is reported as the machine's limit rather than
//! the server's.

use super::format;
use super::schema::{Results, Scenario, SummaryRow, FANOUT};

pub const WS_720P: &str = "ws-720p";
pub const WS_360P: &str = "ws-360p";
pub const SLOW_ALONE: &str = "slow-alone";
pub const SLOW_BESIDE: &str = "slow-beside";

const FULL_FPS: f64 = 29.5;
const P99_VS_FANOUT: f64 = 1.5;
const EVEN_DROP_SHARE: f64 = 0.8;
const OVERLOAD_P99_MS: f64 = 250.0;
const SMALL_P99_MS: f64 = 20.0;
const SMALL_VIEWERS: u32 = 200;
const IDLE_VIEWER_BYTES: f64 = 16.0 * 1024.0;
const SLOW_IMPACT: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Viewers1000,
    Viewers2000,
    Small360p,
    UpTo200,
    IdleMemory,
    SlowViewers,
}

impl Group {
    pub fn label(self) -> &'static str {
        match self {
            Group::Viewers1000 => "(a) 1000 WebSocket viewers of 720p30",
            Group::Viewers2000 => "(b) 2000 viewers of 720p30",
            Group::Small360p => "(c) 640x360 at 2000–3000 viewers",
            Group::UpTo200 => "(d) up to 200 viewers",
            Group::IdleMemory => "(e) idle viewers",
            Group::SlowViewers => "(f) slow viewers",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Met,
    Missed,
    /// Missed, but the load generator or the machine gave out first; the reason says which.
    MachineLimit(String),
    NotMeasured,
    /// Shown for comparison; the target is not set for this subject.
    Reported,
}

impl Verdict {
    pub fn text(&self) -> String {
        match self {
            Verdict::Met => "met".to_owned(),
            Verdict::Missed => "**missed**".to_owned(),
            Verdict::MachineLimit(reason) => format!("limit of this machine: {reason}"),
            Verdict::NotMeasured => "not measured".to_owned(),
            Verdict::Reported => "reported only".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub group: Group,
    pub requirement: String,
    /// What was measured: target and viewer count, or scenario.
    pub subject: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// Every target's checks, in the order of the targets' list.
pub fn evaluate(results: &Results) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.extend(viewers_1000(results.scenario(WS_720P)));
    checks.extend(viewers_2000(results.scenario(WS_720P)));
    checks.extend(small_frames(results.scenario(WS_360P)));
    checks.extend(up_to_200(results));
    checks.push(idle_memory(results));
    checks.extend(slow_impact(
        results.scenario(SLOW_ALONE),
        results.scenario(SLOW_BESIDE),
    ));
    checks.extend(slow_age(results));
    checks
}

/// Why a miss over these rows is the machine's limit, if it is.
pub fn machine_limit(rows: &[&SummaryRow]) -> Option<String> {
    if let Some(row) = rows.iter().find(|r| r.loadgen_bottleneck()) {
        return Some(format!(
            "the load generator was the bottleneck ({}, {} viewers)",
            row.target, row.viewers
        ));
    }
    rows.iter().find(|r| r.machine_saturated()).map(|row| {
        format!(
            "machine {} % busy ({}, {} viewers)",
            format::number(row.machine_busy_pct, 0),
            row.target,
            row.viewers
        )
    })
}

/// The verdict on an absolute figure (fps, latency, age; `None`: not measured): a miss on a
/// saturated machine or behind a saturated load generator says what this machine could load.
fn verdict(ok: Option<bool>, rows: &[&SummaryRow]) -> Verdict {
    match ok {
        None => Verdict::NotMeasured,
        Some(true) => Verdict::Met,
        Some(false) => match machine_limit(rows) {
            Some(reason) => Verdict::MachineLimit(reason),
            None => Verdict::Missed,
        },
    }
}

/// The verdict on a ratio to the fan-out (CPU per frame, p99). A busy machine excuses nothing
/// here: CPU per frame is efficiency, which saturation does not cap. A saturated load generator
/// on either side makes the ratio meaningless, met or not (a fan-out held back by its load
/// generator looks slow, flattering the server).
fn ratio_verdict(ok: Option<bool>, rows: &[&SummaryRow]) -> Verdict {
    match rows.iter().find(|r| r.loadgen_bottleneck()) {
        Some(row) => Verdict::MachineLimit(format!(
            "the load generator was the bottleneck ({}, {} viewers)",
            row.target, row.viewers
        )),
        None => match ok {
            None => Verdict::NotMeasured,
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
        },
    }
}

/// Worker count of a `server-wN` target.
pub fn workers(target: &str) -> Option<u32> {
    target.strip_prefix("server-w")?.parse().ok()
}

fn server_rows(scenario: &Scenario, viewers: u32) -> Vec<&SummaryRow> {
    let mut rows: Vec<_> = scenario
        .summary
        .iter()
        .filter(|r| r.viewers == viewers && !r.is_fanout())
        .collect();
    rows.sort_by(|a, b| a.target.cmp(&b.target));
    rows
}

/// The row and, when there is one, the fan-out's at the same viewer count: both decide whether
/// a ratio to the fan-out was measured on a saturated machine.
fn with_fanout<'a>(scenario: &'a Scenario, row: &'a SummaryRow) -> Vec<&'a SummaryRow> {
    std::iter::once(row)
        .chain(scenario.row(row.viewers, FANOUT))
        .collect()
}

fn fanout_ratio(
    scenario: &Scenario,
    row: &SummaryRow,
    field: fn(&SummaryRow) -> Option<f64>,
) -> Option<f64> {
    let base = field(scenario.row(row.viewers, FANOUT)?)?;
    (base > 0.0).then_some(field(row)? / base)
}

/// The server's CPU per delivered frame over the fan-out's, as bench-server computed it or else
/// from the two rows.
pub fn cpu_vs_fanout(scenario: &Scenario, row: &SummaryRow) -> Option<f64> {
    row.cpu_per_frame_vs_fanout
        .or_else(|| fanout_ratio(scenario, row, |r| r.cpu_us_per_frame))
}

pub fn p99_vs_fanout(scenario: &Scenario, row: &SummaryRow) -> Option<f64> {
    row.p99_vs_fanout
        .or_else(|| fanout_ratio(scenario, row, |r| r.latency_p99_ms))
}

fn subject(row: &SummaryRow) -> String {
    format!("{}, {} viewers", row.target, row.viewers)
}

fn not_measured(group: Group, requirement: &str, subject: &str) -> Check {
    Check {
        group,
        requirement: requirement.to_owned(),
        subject: subject.to_owned(),
        measured: format::MISSING.to_owned(),
        verdict: Verdict::NotMeasured,
    }
}

/// 1 worker may cost 10 % more than the fan-out; more workers must not cost more.
fn cpu_ratio_limit(target: &str) -> f64 {
    if workers(target) == Some(1) {
        1.1
    } else {
        1.0
    }
}

fn viewers_1000(scenario: Option<&Scenario>) -> Vec<Check> {
    let group = Group::Viewers1000;
    let rows = scenario.map(|s| server_rows(s, 1000)).unwrap_or_default();
    let (Some(scenario), false) = (scenario, rows.is_empty()) else {
        return vec![not_measured(
            group,
            "fps, CPU and p99 against the fan-out",
            &format!("{WS_720P}, 1000 viewers"),
        )];
    };
    let mut checks = Vec::new();
    for row in rows {
        let fps = row.fps_median;
        checks.push(Check {
            group,
            requirement: format!("fps median ≥ {FULL_FPS}"),
            subject: subject(row),
            measured: format::number(fps, 1),
            verdict: verdict(fps.map(|f| f >= FULL_FPS), &[row]),
        });
        let limit = cpu_ratio_limit(&row.target);
        let cpu = cpu_vs_fanout(scenario, row);
        checks.push(Check {
            group,
            requirement: format!("CPU per delivered frame ≤ {limit:.1}× the fan-out's"),
            subject: subject(row),
            measured: format::ratio(cpu),
            verdict: ratio_verdict(cpu.map(|c| c <= limit), &with_fanout(scenario, row)),
        });
        let p99 = p99_vs_fanout(scenario, row);
        checks.push(Check {
            group,
            requirement: format!("p99 ≤ {P99_VS_FANOUT}× the fan-out's"),
            subject: subject(row),
            measured: format!(
                "{} ({})",
                format::ratio(p99),
                format::ms(row.latency_p99_ms)
            ),
            verdict: ratio_verdict(p99.map(|p| p <= P99_VS_FANOUT), &with_fanout(scenario, row)),
        });
    }
    checks
}

fn viewers_2000(scenario: Option<&Scenario>) -> Vec<Check> {
    let group = Group::Viewers2000;
    let rows = scenario.map(|s| server_rows(s, 2000)).unwrap_or_default();
    if rows.is_empty() {
        return vec![not_measured(
            group,
            "fps drops evenly, p99 < 250 ms",
            &format!("{WS_720P}, 2000 viewers"),
        )];
    }
    let mut checks = Vec::new();
    for row in rows {
        let even = row
            .fps_min
            .zip(row.fps_median)
            .map(|(slowest, median)| slowest >= EVEN_DROP_SHARE * median);
        checks.push(Check {
            group,
            requirement: format!("fps drops evenly: slowest viewer ≥ {EVEN_DROP_SHARE} × median"),
            subject: subject(row),
            measured: format!(
                "slowest {} / median {}",
                format::number(row.fps_min, 1),
                format::number(row.fps_median, 1)
            ),
            verdict: verdict(even, &[row]),
        });
        let p99 = row.latency_p99_ms;
        checks.push(Check {
            group,
            requirement: format!("p99 < {OVERLOAD_P99_MS} ms"),
            subject: subject(row),
            measured: format::ms(p99),
            verdict: verdict(p99.map(|p| p < OVERLOAD_P99_MS), &[row]),
        });
    }
    checks
}

fn small_frames(scenario: Option<&Scenario>) -> Vec<Check> {
    let group = Group::Small360p;
    let requirement = "CPU per delivered frame ≤ 1.0× the fan-out's (2 workers)";
    let Some(scenario) = scenario else {
        return vec![not_measured(group, requirement, WS_360P)];
    };
    let mut rows: Vec<&SummaryRow> = scenario
        .summary
        .iter()
        .filter(|r| (2000..=3000).contains(&r.viewers) && !r.is_fanout())
        .collect();
    rows.sort_by(|a, b| (a.viewers, &a.target).cmp(&(b.viewers, &b.target)));
    if rows.is_empty() {
        return vec![not_measured(
            group,
            requirement,
            &format!("{WS_360P}, 2000–3000 viewers"),
        )];
    }
    rows.into_iter()
        .map(|row| {
            let cpu = cpu_vs_fanout(scenario, row);
            let verdict = if workers(&row.target) == Some(2) {
                ratio_verdict(cpu.map(|c| c <= 1.0), &with_fanout(scenario, row))
            } else {
                Verdict::Reported
            };
            Check {
                group,
                requirement: requirement.to_owned(),
                subject: subject(row),
                measured: format::ratio(cpu),
                verdict,
            }
        })
        .collect()
}

/// One check per scenario without slow viewers and server target: its worst p99 at up to 200
/// viewers.
fn up_to_200(results: &Results) -> Vec<Check> {
    let group = Group::UpTo200;
    let requirement = format!("p99 < {SMALL_P99_MS} ms at ≤ {SMALL_VIEWERS} viewers");
    let mut checks = Vec::new();
    for scenario in results.scenarios.iter().filter(|s| s.slow == 0) {
        let mut targets: Vec<&str> = scenario
            .summary
            .iter()
            .filter(|r| !r.is_fanout() && r.viewers <= SMALL_VIEWERS)
            .map(|r| r.target.as_str())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            let worst = scenario
                .summary
                .iter()
                .filter(|r| r.target == target && r.viewers <= SMALL_VIEWERS)
                .max_by(|a, b| {
                    let p99 = |r: &SummaryRow| r.latency_p99_ms.unwrap_or(f64::INFINITY);
                    p99(a).total_cmp(&p99(b))
                })
                .expect("targets come from rows");
            let p99 = worst.latency_p99_ms;
            checks.push(Check {
                group,
                requirement: requirement.clone(),
                subject: format!("{}, {}", scenario.id, target),
                measured: format!("worst {} (at {} viewers)", format::ms(p99), worst.viewers),
                verdict: verdict(p99.map(|p| p < SMALL_P99_MS), &[worst]),
            });
        }
    }
    if checks.is_empty() {
        checks.push(not_measured(group, &requirement, "any scenario"));
    }
    checks
}

fn idle_memory(results: &Results) -> Check {
    let requirement = "< 16 KiB per idle viewer";
    let Some(memory) = &results.memory else {
        return not_measured(Group::IdleMemory, requirement, "memory");
    };
    // Bytes per viewer over too few viewers would flatter: most must have been connected.
    if memory
        .requested
        .is_some_and(|requested| f64::from(memory.viewers) < 0.95 * f64::from(requested))
    {
        return not_measured(
            Group::IdleMemory,
            requirement,
            &format!(
                "{} of {:?} viewers connected",
                memory.viewers, memory.requested
            ),
        );
    }
    Check {
        group: Group::IdleMemory,
        requirement: requirement.to_owned(),
        subject: format!("{} idle WebSocket viewers", memory.viewers),
        measured: format!(
            "{} per viewer",
            format::bytes_and_kib(memory.per_viewer_bytes)
        ),
        verdict: verdict(Some(memory.per_viewer_bytes < IDLE_VIEWER_BYTES), &[]),
    }
}

/// Fast viewers' fps must not fall, nor their p99 rise, by 5 % or more when slow viewers join;
/// a change the other way is noise, not harm.
fn slow_impact(alone: Option<&Scenario>, beside: Option<&Scenario>) -> Vec<Check> {
    let group = Group::SlowViewers;
    let fps_requirement = "fast viewers' fps falls < 5 % beside slow ones";
    let p99_requirement = "fast viewers' p99 rises < 5 % beside slow ones";
    let (Some(alone), Some(beside)) = (alone, beside) else {
        return vec![not_measured(
            group,
            fps_requirement,
            &format!("{SLOW_BESIDE} against {SLOW_ALONE}"),
        )];
    };
    let mut checks = Vec::new();
    for row in beside.summary.iter().filter(|r| !r.is_fanout()) {
        let Some(base) = same_fast_viewers(alone, beside, row) else {
            continue;
        };
        let rows = [row, base];
        let subject = format!(
            "{}, {} fast viewers (+ {} slow)",
            row.target,
            base.viewers.saturating_sub(alone.slow),
            beside.slow
        );
        let ratio = |field: fn(&SummaryRow) -> Option<f64>| {
            field(row)
                .zip(field(base))
                .filter(|&(_, b)| b > 0.0)
                .map(|(v, b)| v / b)
        };
        let fps = ratio(|r| r.fps_median);
        checks.push(Check {
            group,
            requirement: fps_requirement.to_owned(),
            subject: subject.clone(),
            measured: format!(
                "{} ({} → {})",
                format::change(fps),
                format::number(base.fps_median, 1),
                format::number(row.fps_median, 1)
            ),
            verdict: ratio_verdict(fps.map(|f| f > 1.0 - SLOW_IMPACT), &rows),
        });
        let p99 = ratio(|r| r.latency_p99_ms);
        checks.push(Check {
            group,
            requirement: p99_requirement.to_owned(),
            subject,
            measured: format!(
                "{} ({} → {})",
                format::change(p99),
                format::ms(base.latency_p99_ms),
                format::ms(row.latency_p99_ms)
            ),
            verdict: ratio_verdict(p99.map(|p| p < 1.0 + SLOW_IMPACT), &rows),
        });
    }
    if checks.is_empty() {
        checks.push(not_measured(
            group,
            fps_requirement,
            "no target and viewer count in both slow scenarios",
        ));
    }
    checks
}

/// The row of `alone` with as many fast viewers as `row` of `beside`: bench-server's viewer
/// count includes the slow ones.
fn same_fast_viewers<'a>(
    alone: &'a Scenario,
    beside: &Scenario,
    row: &SummaryRow,
) -> Option<&'a SummaryRow> {
    let fast = row.viewers.checked_sub(beside.slow)?;
    alone
        .summary
        .iter()
        .find(|r| r.target == row.target && r.viewers.checked_sub(alone.slow) == Some(fast))
}

fn slow_age(results: &Results) -> Vec<Check> {
    let group = Group::SlowViewers;
    let mut checks = Vec::new();
    for scenario in results.scenarios.iter().filter(|s| s.slow > 0) {
        let limit = scenario.slow_age_limit_ms();
        let requirement = format!(
            "slow viewers' frames no older than two transmit times + 0.1 s ({})",
            format::seconds_from_ms(limit)
        );
        for row in scenario.summary.iter().filter(|r| !r.is_fanout()) {
            let age = row.slow_latency_max_ms;
            checks.push(Check {
                group,
                requirement: requirement.clone(),
                subject: format!(
                    "{}, {} slow of {} viewers",
                    row.target, scenario.slow, row.viewers
                ),
                measured: format!(
                    "max {} (median over runs of each run's oldest)",
                    format::seconds_from_ms(age)
                ),
                verdict: verdict(age.zip(limit).map(|(a, l)| a <= l), &[row]),
            });
        }
    }
    if checks.is_empty() {
        checks.push(not_measured(
            group,
            "slow viewers' frames no older than two transmit times + 0.1 s",
            "a scenario with slow viewers",
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::schema::{Machine, Memory};

    fn row(viewers: u32, target: &str) -> SummaryRow {
        SummaryRow {
            viewers,
            target: target.to_owned(),
            fps_median: Some(30.0),
            fps_p10: Some(29.9),
            fps_min: Some(29.8),
            latency_p99_ms: Some(10.0),
            cpu_us_per_frame: Some(10.0),
            machine_busy_pct: Some(50.0),
            ..SummaryRow::default()
        }
    }

    fn scenario(id: &str, rows: Vec<SummaryRow>) -> Scenario {
        Scenario {
            id: id.to_owned(),
            title: id.to_owned(),
            command: format!("scripts/bench-server # {id}"),
            mode: "ws".to_owned(),
            codec: "jpeg".to_owned(),
            size: Some("1280x720".to_owned()),
            fps: Some(30.0),
            frame_bytes: Some(100_000),
            runs: Some(3),
            duration_s: Some(10.0),
            slow: 0,
            slow_rate: Some(50_000),
            summary: rows,
            stopped_early: None,
        }
    }

    fn results(scenarios: Vec<Scenario>) -> Results {
        Results {
            commit: "abc1234".to_owned(),
            dirty: false,
            date: "2026-11-30T03:10:00Z".to_owned(),
            machine: Machine::default(),
            command: "scripts/bench-report".to_owned(),
            quick: false,
            ring: Vec::new(),
            scenarios,
            memory: None,
            failed: Vec::new(),
        }
    }

    fn find<'a>(checks: &'a [Check], requirement: &str, subject: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.requirement.contains(requirement) && c.subject.contains(subject))
            .unwrap_or_else(|| panic!("no check {requirement:?} for {subject:?} in {checks:#?}"))
    }

    #[test]
    fn cpu_limit_is_looser_for_one_worker_than_for_two() {
        let mut w1 = row(1000, "server-w1");
        w1.cpu_us_per_frame = Some(10.9);
        let mut w2 = row(1000, "server-w2");
        w2.cpu_us_per_frame = Some(10.5);
        let s = scenario(WS_720P, vec![row(1000, FANOUT), w1, w2]);
        let checks = viewers_1000(Some(&s));
        assert_eq!(find(&checks, "CPU", "server-w1").verdict, Verdict::Met);
        assert_eq!(find(&checks, "CPU", "server-w2").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "CPU", "server-w2").measured, "1.05×");
    }

    #[test]
    fn bench_servers_ratio_wins_over_the_one_computed_from_rows() {
        let mut w1 = row(1000, "server-w1");
        w1.cpu_per_frame_vs_fanout = Some(1.2);
        let s = scenario(WS_720P, vec![row(1000, FANOUT), w1.clone()]);
        assert_eq!(cpu_vs_fanout(&s, &w1), Some(1.2));
        w1.cpu_per_frame_vs_fanout = None;
        assert_eq!(cpu_vs_fanout(&s, &w1), Some(1.0));
    }

    #[test]
    fn fps_and_p99_at_1000_viewers() {
        let mut w1 = row(1000, "server-w1");
        w1.fps_median = Some(29.4);
        w1.latency_p99_ms = Some(15.1);
        let s = scenario(WS_720P, vec![row(1000, FANOUT), w1]);
        let checks = viewers_1000(Some(&s));
        assert_eq!(find(&checks, "fps median", "w1").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "p99", "w1").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "p99", "w1").measured, "1.51× (15.1 ms)");
    }

    #[test]
    fn a_saturated_machine_turns_a_miss_into_its_limit_but_not_a_pass() {
        let mut w1 = row(1000, "server-w1");
        w1.fps_median = Some(25.0);
        w1.loadgen_bottleneck = Some(true);
        let mut w2 = row(1000, "server-w2");
        w2.fps_median = Some(25.0);
        w2.machine_busy_pct = Some(97.0);
        w2.cpu_us_per_frame = Some(12.0);
        let mut fanout = row(1000, FANOUT);
        fanout.machine_busy_pct = Some(99.0);
        let s = scenario(WS_720P, vec![fanout, w1, w2]);
        let checks = viewers_1000(Some(&s));
        let Verdict::MachineLimit(reason) = &find(&checks, "fps", "w1").verdict else {
            panic!("{checks:#?}");
        };
        assert!(reason.contains("load generator"), "{reason}");
        let Verdict::MachineLimit(reason) = &find(&checks, "fps", "w2").verdict else {
            panic!("{checks:#?}");
        };
        assert!(reason.contains("97 % busy"), "{reason}");
        // Behind a saturated load generator a ratio means nothing, even one that is met.
        assert!(matches!(
            find(&checks, "CPU", "w1").verdict,
            Verdict::MachineLimit(_)
        ));
        // A busy machine does not excuse CPU per frame: that is efficiency.
        assert_eq!(find(&checks, "CPU", "w2").verdict, Verdict::Missed);
        // Nor does it turn a pass into anything else.
        assert_eq!(find(&checks, "p99", "w2").verdict, Verdict::Met);
    }

    #[test]
    fn the_fanouts_saturation_counts_for_ratios_to_it() {
        let mut w1 = row(1000, "server-w1");
        w1.cpu_us_per_frame = Some(20.0);
        let mut fanout = row(1000, FANOUT);
        fanout.loadgen_bottleneck = Some(true);
        let s = scenario(WS_720P, vec![fanout, w1]);
        let checks = viewers_1000(Some(&s));
        assert!(matches!(
            find(&checks, "CPU", "w1").verdict,
            Verdict::MachineLimit(_)
        ));
        assert_eq!(find(&checks, "fps", "w1").verdict, Verdict::Met);
    }

    #[test]
    fn uneven_fps_and_high_p99_at_2000_viewers_miss() {
        let mut w1 = row(2000, "server-w1");
        w1.fps_median = Some(22.0);
        // The slowest viewer decides, not the 10th percentile.
        w1.fps_p10 = Some(21.0);
        w1.fps_min = Some(17.0);
        w1.latency_p99_ms = Some(250.0);
        let mut w2 = row(2000, "server-w2");
        w2.fps_median = Some(22.0);
        w2.fps_min = Some(18.0);
        w2.latency_p99_ms = Some(249.0);
        let s = scenario(WS_720P, vec![w1, w2]);
        let checks = viewers_2000(Some(&s));
        assert_eq!(find(&checks, "evenly", "w1").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "evenly", "w2").verdict, Verdict::Met);
        assert_eq!(find(&checks, "p99", "w1").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "p99", "w2").verdict, Verdict::Met);
    }

    #[test]
    fn only_two_workers_get_a_verdict_at_360p() {
        let mut w1 = row(3000, "server-w1");
        w1.cpu_us_per_frame = Some(12.0);
        let mut w2 = row(3000, "server-w2");
        w2.cpu_us_per_frame = Some(9.0);
        let outside = row(1000, "server-w2");
        let s = scenario(WS_360P, vec![row(3000, FANOUT), w1, w2, outside]);
        let checks = small_frames(Some(&s));
        assert_eq!(checks.len(), 2, "{checks:#?}");
        assert_eq!(find(&checks, "CPU", "w1").verdict, Verdict::Reported);
        assert_eq!(find(&checks, "CPU", "w2").verdict, Verdict::Met);
    }

    #[test]
    fn the_worst_p99_up_to_200_viewers_decides() {
        let mut at_200 = row(200, "server-w1");
        at_200.latency_p99_ms = Some(21.0);
        let mut at_500 = row(500, "server-w1");
        at_500.latency_p99_ms = Some(90.0);
        let r = results(vec![scenario(
            WS_720P,
            vec![row(100, "server-w1"), at_200, at_500, row(100, "server-w2")],
        )]);
        let checks = up_to_200(&r);
        assert_eq!(checks.len(), 2, "{checks:#?}");
        let w1 = find(&checks, "p99", "server-w1");
        assert_eq!(w1.verdict, Verdict::Missed);
        assert_eq!(w1.measured, "worst 21.0 ms (at 200 viewers)");
        assert_eq!(find(&checks, "p99", "server-w2").verdict, Verdict::Met);
    }

    #[test]
    fn idle_memory_against_16_kib() {
        let mut r = results(Vec::new());
        assert_eq!(idle_memory(&r).verdict, Verdict::NotMeasured);
        let memory = |per_viewer_bytes| Memory {
            viewers: 2000,
            requested: Some(2000),
            rss_before_kib: None,
            rss_after_kib: None,
            per_viewer_bytes,
            command: None,
        };
        r.memory = Some(memory(6400.0));
        assert_eq!(idle_memory(&r).verdict, Verdict::Met);
        // Figures over too few connected viewers are not a measurement.
        r.memory = Some(Memory {
            viewers: 100,
            ..memory(6400.0)
        });
        assert_eq!(idle_memory(&r).verdict, Verdict::NotMeasured);
        r.memory = Some(memory(6400.0));
        r.memory = Some(memory(16384.0));
        assert_eq!(idle_memory(&r).verdict, Verdict::Missed);
    }

    #[test]
    fn slow_viewers_may_not_cost_fast_ones_5_percent() {
        // 100 fast viewers in both: bench-server counts the 20 slow ones among the 120.
        let mut beside_w1 = row(120, "server-w1");
        beside_w1.fps_median = Some(28.4);
        beside_w1.latency_p99_ms = Some(9.0);
        let mut beside_w2 = row(120, "server-w2");
        beside_w2.latency_p99_ms = Some(10.6);
        let mut wrong_count = row(120, "server-w1");
        wrong_count.fps_median = Some(28.4);
        let alone = scenario(
            SLOW_ALONE,
            vec![wrong_count, row(100, "server-w1"), row(100, "server-w2")],
        );
        let mut beside = scenario(SLOW_BESIDE, vec![beside_w1, beside_w2]);
        beside.slow = 20;
        let checks = slow_impact(Some(&alone), Some(&beside));
        assert_eq!(find(&checks, "fps", "w1").verdict, Verdict::Missed);
        assert_eq!(find(&checks, "fps", "w1").measured, "-5.3 % (30.0 → 28.4)");
        // A lower p99 beside slow viewers is not harm.
        assert_eq!(find(&checks, "p99", "w1").verdict, Verdict::Met);
        assert_eq!(find(&checks, "fps", "w2").verdict, Verdict::Met);
        assert_eq!(find(&checks, "p99", "w2").verdict, Verdict::Missed);
    }

    #[test]
    fn slow_viewers_frames_are_no_older_than_two_transmit_times() {
        let mut w1 = row(100, "server-w1");
        w1.slow_latency_max_ms = Some(4100.0);
        let mut w2 = row(100, "server-w2");
        w2.slow_latency_max_ms = Some(4101.0);
        let mut fanout = row(100, FANOUT);
        fanout.slow_latency_max_ms = Some(11_500.0);
        let mut beside = scenario(SLOW_BESIDE, vec![fanout, w1, w2]);
        beside.slow = 5;
        // 2 × 100 kB / 50 kB/s + 0.1 s
        assert_eq!(beside.slow_age_limit_ms(), Some(4100.0));
        let checks = slow_age(&results(vec![beside]));
        assert_eq!(checks.len(), 2, "the fan-out is a baseline, not judged");
        assert_eq!(find(&checks, "older", "w1").verdict, Verdict::Met);
        assert_eq!(find(&checks, "older", "w2").verdict, Verdict::Missed);
    }

    #[test]
    fn missing_scenarios_are_reported_as_not_measured() {
        let checks = evaluate(&results(Vec::new()));
        assert!(checks.iter().all(|c| c.verdict == Verdict::NotMeasured));
        for group in [
            Group::Viewers1000,
            Group::Viewers2000,
            Group::Small360p,
            Group::UpTo200,
            Group::IdleMemory,
            Group::SlowViewers,
        ] {
            assert!(checks.iter().any(|c| c.group == group), "{group:?}");
        }
    }
}
