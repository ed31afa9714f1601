//! A lowered [`Plan`] as a GitHub Actions workflow: one job per step (the
//! steps a `for` loop made share a job with a matrix), `needs` from the DAG,
//! approval gates as environments with required reviewers, `concurrency`,
//! timeouts, `continue-on-error` for stages that only warn, handlers as
//! jobs with `if: failure()`/`success()`/`always()`. Secrets reach steps
//! only through `env:` as `${{ secrets.X }}`; no expression is ever written
//! into `run:` text. Every construct GitHub cannot express gets a comment in
//! the output and a warning. See docs/export.md.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;
use pipe_lang::ast::{Expr, ExprKind, HandlerKind, StrPart};
use pipe_lang::eval::interpolate;
use pipe_lang::plan::{shell_quote, CommandPart, Deferrable, PlanStep};
use pipe_lang::{Plan, Value};

use super::yaml::{Entry, Node};

/// `actions/checkout` v5.0.0 (Node 24), pinned to its commit: a tag can be
/// moved, a commit cannot (zizmor's `unpinned-uses`).
const CHECKOUT: &str = "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8";
const CHECKOUT_NAME: &str = "checkout (actions/checkout v5.0.0)";

/// The workflow and what could not be expressed.
pub struct Workflow {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// One plan step as GitHub sees it.
#[derive(Clone, Debug, PartialEq)]
struct StepSpec {
    /// `run` script (after `export PIPE_OUTPUT=...`), or None for a placeholder.
    run: Option<String>,
    env: IndexMap<String, String>,
    image: Option<String>,
    notes: Vec<String>,
}

struct Exporter<'a> {
    plan: &'a Plan,
    warnings: Vec<String>,
    /// Job id of each main step (gates have none).
    job_of: Vec<Option<String>>,
    /// Output keys other jobs read, by job id.
    outputs_read: HashMap<String, BTreeSet<String>>,
    /// Comments of warnings raised while translating values, for the job.
    pending: Vec<String>,
}

pub fn export(plan: &Plan) -> Workflow {
    let mut ex = Exporter {
        plan,
        warnings: Vec::new(),
        job_of: vec![None; plan.steps().len()],
        outputs_read: HashMap::new(),
        pending: Vec::new(),
    };
    let yaml = ex.workflow();
    Workflow {
        yaml,
        warnings: ex.warnings,
    }
}

fn is_gate(s: &PlanStep) -> bool {
    s.executor == "approval" || s.executor == "policy"
}

/// A GitHub job id: letters, digits, `-` and `_`, starting with a letter.
fn job_id(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert_str(0, "job-");
    }
    s
}

/// A GitHub expression string literal.
fn gh_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Exporter<'_> {
    fn warn(&mut self, step: Option<&PlanStep>, message: String) -> String {
        let text = match step {
            Some(s) => format!("{}: {message}", s.id),
            None => message,
        };
        self.warnings.push(text.clone());
        format!("pipe: not exported: {text}")
    }

    /// Groups of main steps that become one job: the steps one `for` loop
    /// made (same stage, same declaration) share a job.
    fn groups(&self) -> Vec<Vec<usize>> {
        let steps = self.plan.steps();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            if is_gate(s) {
                continue;
            }
            match groups.iter_mut().find(|g| {
                let f = &steps[g[0]];
                f.stage == s.stage && f.span == s.span && f.executor == s.executor
            }) {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        groups
    }

    fn workflow(&mut self) -> String {
        let plan = self.plan;
        let steps = plan.steps();
        let groups = self.groups();
        // Job ids first: needs and expressions refer to them.
        let mut taken = BTreeSet::new();
        let mut group_ids = Vec::new();
        for g in &groups {
            let base = if g.len() == 1 {
                job_id(&steps[g[0]].id)
            } else {
                let names: Vec<&str> = g.iter().map(|&i| steps[i].name.as_str()).collect();
                let prefix = common_prefix(&names);
                let prefix = prefix.trim_end_matches(['-', '_', '.']);
                if prefix.is_empty() {
                    job_id(&format!("{}-{}", steps[g[0]].stage, names[0]))
                } else {
                    job_id(&format!("{}-{prefix}", steps[g[0]].stage))
                }
            };
            let mut id = base.clone();
            let mut n = 2;
            while !taken.insert(id.clone()) {
                id = format!("{base}-{n}");
                n += 1;
            }
            for &i in g {
                self.job_of[i] = Some(id.clone());
            }
            group_ids.push(id);
        }

        let mut specs: Vec<Vec<StepSpec>> = Vec::new();
        for g in &groups {
            specs.push(g.iter().map(|&i| self.step_spec(&steps[i])).collect());
        }

        let mut jobs: Vec<Entry> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let id = group_ids[gi].clone();
            let job = self.job(g, &specs[gi], &id);
            // A loop whose items differ in more than literal values cannot
            // share a matrix: its steps become jobs of their own.
            match job {
                Some(j) => jobs.push(Entry::Pair(id, j)),
                None => {
                    for (k, &i) in g.iter().enumerate() {
                        let own = job_id(&steps[i].id);
                        let own = if taken.insert(own.clone()) {
                            own
                        } else {
                            format!("{own}-{k}")
                        };
                        self.job_of[i] = Some(own.clone());
                        let j = self
                            .job(&[i], &specs[gi][k..=k], &own)
                            .unwrap_or_else(Node::map);
                        jobs.push(Entry::Pair(own, j));
                    }
                }
            }
        }
        // Outputs that other jobs read, declared on their jobs.
        for e in &mut jobs {
            if let Entry::Pair(id, job) = e {
                if let Some(keys) = self.outputs_read.get(id.as_str()) {
                    let mut outs = Node::map();
                    for k in keys {
                        outs.set(k, Node::str(format!("${{{{ steps.run.outputs.{k} }}}}")));
                    }
                    job.set("outputs", outs);
                }
            }
        }
        // Handlers run after every main job.
        let all_jobs: Vec<String> = jobs
            .iter()
            .filter_map(|e| match e {
                Entry::Pair(k, _) => Some(k.clone()),
                Entry::Comment(_) => None,
            })
            .collect();
        for (hi, h) in plan.handlers().iter().enumerate() {
            let spec = self.step_spec(h);
            let id = job_id(&format!(
                "on-{}-{}",
                h.stage.trim_start_matches("on_"),
                h.name
            ));
            let id = if taken.insert(id.clone()) {
                id
            } else {
                format!("{id}-{hi}")
            };
            let mut job = self.job_body(h, &spec, &[]);
            let cond = match h.handler {
                Some(HandlerKind::Success) => "success()",
                Some(HandlerKind::Always) => "always()",
                _ => "failure()",
            };
            prepend(&mut job, "if", Node::str(format!("${{{{ {cond} }}}}")));
            prepend(
                &mut job,
                "needs",
                Node::List(all_jobs.iter().cloned().map(Node::Str).collect()),
            );
            jobs.push(Entry::Pair(id, job));
        }

        let mut doc = Node::map();
        let title = match &plan.target_env {
            Some(e) => format!("pipe: {} ({e})", plan.pipeline),
            None => format!("pipe: {}", plan.pipeline),
        };
        doc.comment(&format!(
            "Generated by `pipe export github {}` from {}: edit the .pipe source, not this file.",
            plan.pipeline,
            plan.location(plan.span)
        ));
        if !plan.params.is_empty() {
            let ps: Vec<String> = plan
                .params
                .iter()
                .map(|(k, v)| format!("{k}={}", interpolate(v, plan.span).unwrap_or_default()))
                .collect();
            doc.comment(&format!(
                "Params and git.* were fixed at export time ({}); export again (-p, --git-ref) to change them.",
                ps.join(", ")
            ));
        }
        for (name, env) in plan.envs() {
            if !env.approvers.is_empty() || env.protected {
                doc.comment(&format!(
                    "Environment `{name}`: in the repository settings, add required reviewers ({}) and restrict it to protected branches and tags.",
                    if env.approvers.is_empty() { "none named in the pipeline".to_string() } else { env.approvers.join(", ") }
                ));
            }
        }
        doc.set("name", Node::str(title));
        let mut on = Node::map();
        on.set("workflow_dispatch", Node::map());
        doc.set("on", on);
        // Nothing by default; each job asks for read access to the code.
        doc.set("permissions", Node::map());
        let mut conc = Node::map();
        conc.set(
            "group",
            Node::str(format!("pipe-{}-${{{{ github.ref }}}}", plan.pipeline)),
        );
        conc.set("cancel-in-progress", Node::Plain("false".into()));
        doc.set("concurrency", conc);
        doc.set("jobs", Node::Map(jobs));
        super::yaml::to_string(&doc)
    }

    /// The job of a group, or None when its items cannot share a matrix.
    fn job(&mut self, group: &[usize], specs: &[StepSpec], _id: &str) -> Option<Node> {
        let steps = self.plan.steps();
        let first = &steps[group[0]];
        let needs = self.needs(group);
        if group.len() == 1 {
            return Some(self.job_body(first, &specs[0], &needs));
        }
        // Values that differ between items go into the matrix, if literal.
        let differs =
            |f: &dyn Fn(&StepSpec) -> Option<String>| specs.iter().any(|s| f(s) != f(&specs[0]));
        let run_differs = differs(&|s| s.run.clone());
        let image_differs = differs(&|s| s.image.clone());
        let mut env_differs = Vec::new();
        for k in specs[0].env.keys() {
            if differs(&|s| s.env.get(k).cloned()) {
                env_differs.push(k.clone());
            }
        }
        if specs.iter().any(|s| s.env.keys().ne(specs[0].env.keys())) {
            return None;
        }
        let literal = |v: &Option<String>| v.as_deref().is_none_or(|t| !t.contains("${{"));
        for s in specs {
            if (run_differs && !literal(&s.run))
                || (image_differs && !literal(&s.image))
                || env_differs.iter().any(|k| !literal(&s.env.get(k).cloned()))
            {
                return None;
            }
        }
        let mut include = Vec::new();
        for (s, &i) in specs.iter().zip(group) {
            let mut item = Node::map();
            item.set("step", Node::str(steps[i].id.clone()));
            if run_differs {
                item.set("run", Node::str(s.run.clone().unwrap_or_default()));
            }
            if image_differs {
                item.set("image", Node::str(s.image.clone().unwrap_or_default()));
            }
            for k in &env_differs {
                item.set(&format!("env_{k}"), Node::str(s.env[k].clone()));
            }
            include.push(item);
        }
        let mut spec = specs[0].clone();
        if run_differs {
            spec.run = Some("eval \"$PIPE_RUN\"".into());
            spec.env
                .insert("PIPE_RUN".into(), "${{ matrix.run }}".into());
        }
        if image_differs {
            spec.image = Some("${{ matrix.image }}".into());
        }
        for k in &env_differs {
            spec.env
                .insert(k.clone(), format!("${{{{ matrix.env_{k} }}}}"));
        }
        for s in &specs[1..] {
            for n in &s.notes {
                if !spec.notes.contains(n) {
                    spec.notes.push(n.clone());
                }
            }
        }
        let mut job = self.job_body(first, &spec, &needs);
        let mut strategy = Node::map();
        strategy.set("fail-fast", Node::Plain("false".into()));
        let mut matrix = Node::map();
        matrix.set("include", Node::List(include));
        strategy.set("matrix", matrix);
        prepend(&mut job, "strategy", strategy);
        if let Some(Node::Str(name)) = job.get_mut("name") {
            *name = "${{ matrix.step }}".into();
        }
        if let Node::Map(entries) = &mut job {
            entries.insert(
                0,
                Entry::Comment(format!(
                    "pipe: one job per item of the `for` loop at {}",
                    self.plan.location(first.span)
                )),
            );
        }
        if let Some(Node::List(gh_steps)) = job.get_mut("steps") {
            for st in gh_steps {
                if let Some(Node::Str(n)) = st.get_mut("name") {
                    if n == &first.id {
                        *n = "${{ matrix.step }}".into();
                    }
                }
            }
        }
        Some(job)
    }

    /// The jobs a group waits for: its steps' needs, through approval gates.
    fn needs(&mut self, group: &[usize]) -> Vec<String> {
        let steps = self.plan.steps();
        let mut out = BTreeSet::new();
        let mut stack: Vec<usize> = group.iter().flat_map(|&i| steps[i].needs.clone()).collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if is_gate(&steps[n]) {
                stack.extend(steps[n].needs.iter().copied());
            } else if let Some(j) = &self.job_of[n] {
                out.insert(j.clone());
            }
        }
        // A job in the group never waits for itself.
        for &i in group {
            if let Some(j) = &self.job_of[i] {
                out.remove(j);
            }
        }
        out.into_iter().collect()
    }

    /// The gates a step waits for, directly or through other gates.
    fn gates_before<'p>(plan: &'p Plan, step: &PlanStep) -> Vec<&'p PlanStep> {
        let steps = plan.steps();
        let mut out = Vec::new();
        let mut stack = step.needs.clone();
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) || !is_gate(&steps[n]) {
                continue;
            }
            out.push(&steps[n]);
            stack.extend(steps[n].needs.iter().copied());
        }
        out
    }

    fn job_body(&mut self, step: &PlanStep, spec: &StepSpec, needs: &[String]) -> Node {
        let mut job = Node::map();
        job.set("name", Node::str(step.id.clone()));
        if !needs.is_empty() {
            job.set(
                "needs",
                Node::List(needs.iter().cloned().map(Node::Str).collect()),
            );
        }
        match &step.when {
            Some(Deferrable::Ready(v)) if !v.truthy() => {
                job.set("if", Node::str("${{ false }}"));
            }
            Some(Deferrable::Deferred(e)) => match self.expr(e) {
                Some(x) => {
                    job.set("if", Node::str(format!("${{{{ {x} }}}}")));
                }
                None => {
                    let c = self.warn(
                        Some(step),
                        format!(
                            "its condition `when = {}` has no GitHub expression; the job always runs",
                            pipe_lang::fmt::expr_to_string(e)
                        ),
                    );
                    job.comment(&c);
                }
            },
            _ => {}
        }
        for c in std::mem::take(&mut self.pending) {
            job.comment(&c);
        }
        let gates = Self::gates_before(self.plan, step);
        let environment = step
            .environment
            .clone()
            .or_else(|| gates.iter().find_map(|g| g.environment.clone()));
        if let Some(env) = &environment {
            job.set("environment", Node::str(env.clone()));
        }
        for g in gates {
            if g.executor == "approval" {
                let env = environment.clone().unwrap_or_else(|| "production".into());
                let c = self.warn(
                    Some(g),
                    format!(
                        "the approval gate becomes the environment `{env}` of the jobs after it: add its required reviewers in the repository settings (GitHub has no reviewers in workflow files)"
                    ),
                );
                job.comment(&c);
            } else {
                let c = self.warn(
                    Some(g),
                    "a policy gate has no GitHub equivalent: prove it with `pipe check` before exporting".into(),
                );
                job.comment(&c);
            }
        }
        let mut perms = Node::map();
        perms.set("contents", Node::str("read"));
        job.set("permissions", perms);
        job.set("runs-on", Node::str("ubuntu-latest"));
        if let Some(ms) = step.timeout_ms {
            job.set(
                "timeout-minutes",
                Node::Plain(ms.div_ceil(60_000).max(1).to_string()),
            );
        }
        if !step.required {
            job.comment("pipe: the stage is not required: a failure only warns");
            job.set("continue-on-error", Node::Plain("true".into()));
        }
        if let Some(group) = &step.concurrency {
            let mut c = Node::map();
            c.set("group", Node::str(group.clone()));
            c.set("cancel-in-progress", Node::Plain("false".into()));
            job.set("concurrency", c);
        }
        if let Some(image) = &spec.image {
            let mut c = Node::map();
            c.set("image", Node::str(image.clone()));
            job.set("container", c);
        }
        if let Some(r) = &step.retry {
            let c = self.warn(
                Some(step),
                format!(
                    "GitHub Actions cannot retry a step: `retry {{ attempts = {} }}` is left out",
                    r.attempts
                ),
            );
            job.comment(&c);
        }
        if step.cache.is_some() {
            let c = self.warn(
                Some(step),
                "`cache` (skip when a recorded success matches) has no GitHub equivalent; the job always runs".into(),
            );
            job.comment(&c);
        }
        for n in &spec.notes {
            job.comment(n);
        }
        let mut gh_steps = Vec::new();
        let mut checkout = Node::map();
        checkout.set("name", Node::str(CHECKOUT_NAME));
        checkout.set("uses", Node::str(CHECKOUT));
        let mut with = Node::map();
        with.set("persist-credentials", Node::Plain("false".into()));
        checkout.set("with", with);
        gh_steps.push(checkout);
        if let Some(env) = step
            .environment
            .as_ref()
            .and_then(|e| self.plan.envs().get(e))
        {
            if let Some(file) = &env.file {
                let mut load = Node::map();
                load.set(
                    "name",
                    Node::str(format!("environment {} from {file}", env.name)),
                );
                load.set("shell", Node::str("bash"));
                load.set("env", {
                    let mut e = Node::map();
                    e.set("PIPE_ENV_FILE", Node::str(file.clone()));
                    e
                });
                load.set(
                    "run",
                    Node::str(
                        "grep -Ev '^[[:space:]]*(#|$)' \"$PIPE_ENV_FILE\" >> \"$GITHUB_ENV\"",
                    ),
                );
                gh_steps.push(load);
            }
        }
        let mut run = Node::map();
        run.set("name", Node::str(step.id.clone()));
        run.set("id", Node::str("run"));
        if !spec.env.is_empty() {
            let mut env = Node::map();
            for (k, v) in &spec.env {
                env.set(k, Node::str(v.clone()));
            }
            run.set("env", env);
        }
        let shell = step.shell.clone().unwrap_or_else(|| "sh".into());
        run.set("shell", Node::str(format!("{shell} {{0}}")));
        match &spec.run {
            Some(script) => {
                run.set(
                    "run",
                    Node::str(format!("export PIPE_OUTPUT=\"$GITHUB_OUTPUT\"\n{script}\n")),
                );
            }
            None => {
                run.set(
                    "run",
                    Node::str(format!(
                        "echo \"::error::{} runs on pipe's {} executor, which GitHub Actions has no equivalent for\"\nexit 1\n",
                        step.id, step.executor
                    )),
                );
            }
        }
        gh_steps.push(run);
        if let Some(cmd) = &step.on_failure {
            let mut env = IndexMap::new();
            let script = self.command(step, &cmd.parts, &mut env);
            let mut f = Node::map();
            f.set("name", Node::str(format!("{} on_failure", step.id)));
            f.set("if", Node::str("${{ failure() }}"));
            if !env.is_empty() {
                let mut e = Node::map();
                for (k, v) in &env {
                    e.set(k, Node::str(v.clone()));
                }
                f.set("env", e);
            }
            f.set("shell", Node::str(format!("{shell} {{0}}")));
            f.set("run", Node::str(format!("{script}\n")));
            gh_steps.push(f);
            for c in std::mem::take(&mut self.pending) {
                job.comment(&c);
            }
        }
        job.set("steps", Node::List(gh_steps));
        job
    }

    /// How one plan step runs on GitHub.
    fn step_spec(&mut self, step: &PlanStep) -> StepSpec {
        let mut spec = StepSpec {
            run: None,
            env: IndexMap::new(),
            image: None,
            notes: Vec::new(),
        };
        for (k, d) in &step.env {
            let v = self.value(step, d, &format!("env {k}"));
            spec.env.insert(k.clone(), v);
        }
        match step.executor.as_str() {
            "shell" | "container" | "swarm" => {
                if step.executor != "shell" {
                    if let Some(d) = step.inputs.get("image") {
                        spec.image = Some(self.value(step, d, "image"));
                    }
                    for k in [
                        "user",
                        "workdir",
                        "network",
                        "cpus",
                        "memory",
                        "placement",
                        "artifacts",
                    ] {
                        if step.inputs.contains_key(k) {
                            let n = self.warn(
                                Some(step),
                                format!("the container setting `{k}` is not exported"),
                            );
                            spec.notes.push(n);
                        }
                    }
                    if step.executor == "swarm" {
                        spec.notes.push(
                            "pipe: runs on the swarm with pipe; a GitHub job runs on a runner"
                                .into(),
                        );
                    }
                }
                if step.inputs.contains_key("services") {
                    let n = self.warn(
                        Some(step),
                        "`service` blocks are not exported (use GitHub `services:` by hand)".into(),
                    );
                    spec.notes.push(n);
                }
                if let Some(t) = &step.run {
                    let mut env = IndexMap::new();
                    let script = self.command(step, &t.parts, &mut env);
                    spec.env.extend(env);
                    spec.run = Some(script);
                }
            }
            "docker.build" | "docker.push" | "notify.slack" => {
                let mut env = IndexMap::new();
                let script = match step.executor.as_str() {
                    "docker.build" => self.docker_build(step, &mut env),
                    "docker.push" => self.docker_push(step, &mut env),
                    _ => self.slack(step, &mut env),
                };
                spec.env.extend(env);
                spec.run = script;
            }
            other => {
                let what = step.template.clone().unwrap_or_else(|| other.to_string());
                let n = self.warn(
                    Some(step),
                    format!("`{what}` runs on pipe's `{other}` executor, which has no GitHub Actions equivalent: the job fails with an error until it is replaced"),
                );
                spec.notes.push(n);
            }
        }
        spec.notes.append(&mut self.pending);
        spec
    }

    /// One shell word for a value: quoted when known at plan time, else a
    /// variable of the step's environment holding its GitHub expression.
    fn word(
        &mut self,
        step: &PlanStep,
        d: &Deferrable,
        what: &str,
        env: &mut IndexMap<String, String>,
    ) -> String {
        match d {
            Deferrable::Ready(v) => shell_quote(&interpolate(v, step.span).unwrap_or_default()),
            Deferrable::Deferred(_) => {
                let name = format!("PIPE_IN_{}", env.len() + 1);
                let v = self.value(step, d, what);
                env.insert(name.clone(), v);
                format!("\"${name}\"")
            }
        }
    }

    /// A list input known at plan time, as strings.
    fn list(&mut self, step: &PlanStep, key: &str) -> Vec<String> {
        match step.inputs.get(key) {
            Some(Deferrable::Ready(Value::List(l))) => l
                .iter()
                .map(|v| interpolate(v, step.span).unwrap_or_default())
                .collect(),
            Some(Deferrable::Ready(Value::Null)) | None => Vec::new(),
            Some(Deferrable::Ready(v)) => vec![interpolate(v, step.span).unwrap_or_default()],
            Some(Deferrable::Deferred(_)) => {
                let c = self.warn(
                    Some(step),
                    format!("`{key}` is only known at run time; it is left out"),
                );
                self.pending.push(c);
                Vec::new()
            }
        }
    }

    fn input_text(step: &PlanStep, key: &str) -> Option<String> {
        match step.inputs.get(key)? {
            Deferrable::Ready(Value::Null) => None,
            Deferrable::Ready(v) => interpolate(v, step.span).ok(),
            Deferrable::Deferred(_) => None,
        }
    }

    /// `docker.build` as `docker build` on the runner.
    fn docker_build(
        &mut self,
        step: &PlanStep,
        env: &mut IndexMap<String, String>,
    ) -> Option<String> {
        let dockerfile = step.inputs.get("dockerfile")?.clone();
        let mut cmd = format!(
            "docker build -f {}",
            self.word(step, &dockerfile, "dockerfile", env)
        );
        if let Some(t) = Self::input_text(step, "target") {
            cmd.push_str(&format!(" --target {}", shell_quote(&t)));
        }
        if step
            .inputs
            .get("no_cache")
            .and_then(Deferrable::ready)
            .is_some_and(Value::truthy)
        {
            cmd.push_str(" --no-cache");
        }
        for (flag, key) in [("--build-arg", "args"), ("--label", "labels")] {
            if let Some(d) = step.inputs.get(key) {
                match d {
                    Deferrable::Ready(Value::Map(m)) => {
                        for (k, v) in m {
                            let w = self.word(step, &Deferrable::Ready(v.clone()), key, env);
                            cmd.push_str(&format!(" {flag} {}={w}", shell_quote(k)));
                        }
                    }
                    Deferrable::Deferred(e) => {
                        if let ExprKind::Map(entries) = &e.kind {
                            for (k, v) in entries {
                                let d = match &v.kind {
                                    ExprKind::Value(val) => Deferrable::Ready(val.clone()),
                                    _ => Deferrable::Deferred(v.clone()),
                                };
                                let w = self.word(step, &d, &format!("{key}.{}", k.name), env);
                                cmd.push_str(&format!(" {flag} {}={w}", shell_quote(&k.name)));
                            }
                        } else {
                            let c = self.warn(
                                Some(step),
                                format!("`{key}` is only known at run time; it is left out"),
                            );
                            self.pending.push(c);
                        }
                    }
                    Deferrable::Ready(_) => {}
                }
            }
        }
        let refs = references(
            Self::input_text(step, "image").as_deref(),
            &self.list(step, "tags"),
        );
        for r in &refs {
            cmd.push_str(&format!(" -t {}", shell_quote(r)));
        }
        let context = Self::input_text(step, "context").unwrap_or_else(|| ".".into());
        cmd.push_str(&format!(" {}", shell_quote(&context)));
        let mut script = format!("{cmd}\n");
        if let Some(first) = refs.first() {
            script.push_str(&format!(
                "echo \"image_id=$(docker image inspect --format '{{{{.Id}}}}' {})\" >> \"$PIPE_OUTPUT\"\necho \"tags={}\" >> \"$PIPE_OUTPUT\"",
                shell_quote(first),
                refs.join(" ")
            ));
        }
        Some(script)
    }

    /// `docker.push` as `docker login` (credentials from `env:`) and `docker push`.
    fn docker_push(
        &mut self,
        step: &PlanStep,
        env: &mut IndexMap<String, String>,
    ) -> Option<String> {
        let image = Self::input_text(step, "image")?;
        let refs = references(Some(&image), &self.list(step, "tags"));
        let mut script = String::new();
        if let (Some(u), Some(p)) = (
            step.inputs.get("username").cloned(),
            step.inputs.get("password").cloned(),
        ) {
            let user = self.word(step, &u, "username", env);
            let pass = self.word(step, &p, "password", env);
            let registry = pipe_runtime::docker::registry_of(&image).unwrap_or_default();
            script.push_str(&format!(
                "printf '%s' {pass} | docker login {} -u {user} --password-stdin\n",
                shell_quote(&registry)
            ));
        }
        for r in &refs {
            script.push_str(&format!("docker push {}\n", shell_quote(r)));
        }
        if let Some(first) = refs.first() {
            script.push_str(&format!(
                "echo \"digest=$(docker image inspect --format '{{{{index .RepoDigests 0}}}}' {} | cut -d@ -f2)\" >> \"$PIPE_OUTPUT\"",
                shell_quote(first)
            ));
        }
        Some(script.trim_end().to_string())
    }

    /// `notify.slack` as a `curl` POST of `{"text": ...}` built by `jq`.
    fn slack(&mut self, step: &PlanStep, env: &mut IndexMap<String, String>) -> Option<String> {
        let webhook = step.inputs.get("webhook")?.clone();
        let text = step.inputs.get("text")?.clone();
        let text = self.word(step, &text, "text", env);
        let webhook = self.word(step, &webhook, "webhook", env);
        let mut script = format!(
            "payload=$(jq -n --arg text {text} '{{text: $text}}')\ncurl -fsS --retry 3 -X POST -H 'Content-Type: application/json' --data \"$payload\" {webhook}"
        );
        if !step
            .inputs
            .get("required")
            .and_then(Deferrable::ready)
            .is_some_and(Value::truthy)
        {
            // A notification that fails only warns, as with pipe.
            script = format!(
                "{{\n{script}\n}} || echo \"::warning::{} could not be delivered\"",
                step.id
            );
        }
        Some(script)
    }

    /// A `run` command: literal text as written, plan-time values quoted as
    /// pipe quotes them, run-time values through the environment.
    fn command(
        &mut self,
        step: &PlanStep,
        parts: &[CommandPart],
        env: &mut IndexMap<String, String>,
    ) -> String {
        let mut out = String::new();
        for p in parts {
            match p {
                CommandPart::Lit(s) => out.push_str(s),
                CommandPart::Value(Deferrable::Ready(v)) => {
                    out.push_str(&shell_quote(&interpolate(v, step.span).unwrap_or_default()));
                }
                CommandPart::Value(d) => {
                    let name = format!("PIPE_IN_{}", env.len() + 1);
                    let v = self.value(step, d, "run");
                    env.insert(name.clone(), v);
                    out.push_str(&format!("\"${name}\""));
                }
            }
        }
        out
    }

    /// A value for YAML: plan-time values as text, run-time ones as a
    /// `${{ }}` expression (or empty, with a warning).
    fn value(&mut self, step: &PlanStep, d: &Deferrable, what: &str) -> String {
        match d {
            Deferrable::Ready(v) => interpolate(v, step.span).unwrap_or_default(),
            Deferrable::Deferred(e) => match self.expr(e) {
                Some(x) => format!("${{{{ {x} }}}}"),
                None => {
                    let c = self.warn(
                        Some(step),
                        format!(
                            "{what}: `{}` has no GitHub expression; it is empty",
                            pipe_lang::fmt::expr_to_string(e)
                        ),
                    );
                    self.pending.push(c);
                    String::new()
                }
            },
        }
    }

    /// A pipe expression as a GitHub expression, where one exists.
    fn expr(&mut self, e: &Expr) -> Option<String> {
        match &e.kind {
            ExprKind::Value(v) => literal(v),
            ExprKind::Null => Some("null".into()),
            ExprKind::Bool(b) => Some(b.to_string()),
            ExprKind::Int(i) => Some(i.to_string()),
            ExprKind::Float(f) => Some(f.to_string()),
            ExprKind::Str(parts) => {
                let mut fmt = String::new();
                let mut args = Vec::new();
                for p in parts {
                    match p {
                        StrPart::Lit(s) => fmt.push_str(&s.replace('{', "{{").replace('}', "}}")),
                        StrPart::Interp(x) => {
                            fmt.push_str(&format!("{{{}}}", args.len()));
                            args.push(self.expr(x)?);
                        }
                    }
                }
                if args.is_empty() {
                    return Some(gh_str(&fmt));
                }
                Some(format!("format({}, {})", gh_str(&fmt), args.join(", ")))
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let op = match op {
                    pipe_lang::ast::BinOp::And => "&&",
                    pipe_lang::ast::BinOp::Or | pipe_lang::ast::BinOp::Coalesce => "||",
                    pipe_lang::ast::BinOp::Eq => "==",
                    pipe_lang::ast::BinOp::Ne => "!=",
                    pipe_lang::ast::BinOp::Lt => "<",
                    pipe_lang::ast::BinOp::Le => "<=",
                    pipe_lang::ast::BinOp::Gt => ">",
                    pipe_lang::ast::BinOp::Ge => ">=",
                    _ => return None,
                };
                Some(format!("({a} {op} {b})"))
            }
            ExprKind::Unary(pipe_lang::ast::UnOp::Not, a) => Some(format!("!({})", self.expr(a)?)),
            _ => self.path(e),
        }
    }

    /// `secrets.X`, `env.X`, `steps.X.outputs.Y`, `git.*`.
    fn path(&mut self, e: &Expr) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = e;
        loop {
            match &cur.kind {
                ExprKind::Field(b, f) => {
                    parts.push(f.name.clone());
                    cur = b;
                }
                ExprKind::Index(b, i) => {
                    let key = match &i.kind {
                        ExprKind::Value(Value::Str(s)) => s.clone(),
                        ExprKind::Str(p) if p.iter().all(|x| matches!(x, StrPart::Lit(_))) => p
                            .iter()
                            .map(|x| match x {
                                StrPart::Lit(s) => s.as_str(),
                                StrPart::Interp(_) => "",
                            })
                            .collect(),
                        _ => return None,
                    };
                    parts.push(key);
                    cur = b;
                }
                ExprKind::Ident(n) => {
                    parts.push(n.clone());
                    break;
                }
                _ => return None,
            }
        }
        parts.reverse();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["secrets", name] => Some(format!("secrets.{name}")),
            ["env", name] => Some(format!("env.{name}")),
            ["git", "sha"] => Some("github.sha".into()),
            ["git", "branch" | "tag"] => Some("github.ref_name".into()),
            ["steps", name, "outputs", key] => {
                let steps = self.plan.steps();
                let i = steps
                    .iter()
                    .position(|s| s.id == *name)
                    .or_else(|| steps.iter().position(|s| s.name == *name))?;
                let job = self.job_of[i].clone()?;
                if self
                    .job_of
                    .iter()
                    .filter(|j| j.as_ref() == Some(&job))
                    .count()
                    > 1
                {
                    let step = &steps[i];
                    let c = self.warn(
                        Some(step),
                        format!("its output `{key}` comes from a matrix job: on GitHub the last leg to finish sets it"),
                    );
                    self.pending.push(c);
                }
                self.outputs_read
                    .entry(job.clone())
                    .or_default()
                    .insert((*key).to_string());
                Some(format!("needs.{job}.outputs.{key}"))
            }
            _ => None,
        }
    }
}

fn literal(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Str(s) => Some(gh_str(s)),
        _ => None,
    }
}

/// The references a build tags or a push pushes: a tag without a repository
/// goes after `image`; one with its own repository is used as is.
fn references(image: Option<&str>, tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = tags
        .iter()
        .map(|t| match image {
            Some(i) if !t.contains(':') && !t.contains('/') => format!("{i}:{t}"),
            _ => t.clone(),
        })
        .collect();
    if out.is_empty() {
        if let Some(i) = image {
            out.push(i.to_string());
        }
    }
    out
}

fn common_prefix<'a>(names: &[&'a str]) -> &'a str {
    let first = names[0];
    let mut n = first.len();
    for s in &names[1..] {
        n = n.min(
            first
                .char_indices()
                .zip(s.chars())
                .take_while(|((_, a), b)| a == b)
                .count(),
        );
    }
    &first[..first.char_indices().nth(n).map_or(first.len(), |(i, _)| i)]
}

/// Puts a pair right after `name` in a job (keys read better in that order).
fn prepend(job: &mut Node, key: &str, value: Node) {
    if let Node::Map(entries) = job {
        let at = entries
            .iter()
            .position(|e| matches!(e, Entry::Pair(k, _) if k == "name"))
            .map_or(0, |i| i + 1);
        entries.insert(at, Entry::Pair(key.to_string(), value));
    }
}
