//! Pod detectors: one finding per transition or container restart, never one per watch event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::detect::detect_pod;
use auto_agent_engine::{
    ContainerState, ContainerView, FindingKind, PodView, Terminated, WorkloadRef,
};

fn running() -> ContainerState {
    ContainerState::Running
}
fn waiting(reason: &str) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.into(),
        message: format!("{reason} message"),
    }
}
fn term(reason: &str, exit_code: i32, at: &str) -> Terminated {
    Terminated {
        reason: reason.into(),
        exit_code,
        message: String::new(),
        finished_at: Some(at.into()),
    }
}
fn container(state: ContainerState, restarts: u32, last: Option<Terminated>) -> ContainerView {
    ContainerView {
        name: "app".into(),
        image: "registry.example.com/app:1".into(),
        restart_count: restarts,
        ready: matches!(state, ContainerState::Running),
        state,
        last_terminated: last,
    }
}
fn pod(containers: Vec<ContainerView>) -> PodView {
    PodView {
        namespace: "prod".into(),
        name: "api-7d9-x".into(),
        uid: "uid-1".into(),
        node: "node-a".into(),
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: "api".into(),
        }),
        phase: "Running".into(),
        reason: None,
        message: None,
        containers,
    }
}

fn healthy() -> PodView {
    pod(vec![container(running(), 0, None)])
}
fn crashloop(restarts: u32) -> PodView {
    pod(vec![container(
        waiting("CrashLoopBackOff"),
        restarts,
        Some(term("Error", 1, &format!("t{restarts}"))),
    )])
}
fn oom(restarts: u32, state: ContainerState) -> PodView {
    pod(vec![container(
        state,
        restarts,
        Some(term("OOMKilled", 137, &format!("t{restarts}"))),
    )])
}
fn pull(reason: &str, image: &str) -> PodView {
    let mut c = container(waiting(reason), 0, None);
    c.image = image.into();
    PodView {
        phase: "Pending".into(),
        ..pod(vec![c])
    }
}
fn evicted() -> PodView {
    PodView {
        phase: "Failed".into(),
        reason: Some("Evicted".into()),
        message: Some("The node was low on resource: memory.".into()),
        ..healthy()
    }
}

/// (case, previous, current, expected (kind, id, reason) of each finding)
type Case = (
    &'static str,
    Option<PodView>,
    PodView,
    Vec<(FindingKind, &'static str, &'static str)>,
);

#[test]
fn pod_detection_table() {
    let cases: Vec<Case> = vec![
        ("healthy first sight", None, healthy(), vec![]),
        ("healthy stays healthy", Some(healthy()), healthy(), vec![]),
        (
            "enters CrashLoopBackOff",
            Some(healthy()),
            crashloop(3),
            vec![(
                FindingKind::CrashLoopBackOff,
                "uid-1/app/CrashLoopBackOff/3",
                "CrashLoopBackOff",
            )],
        ),
        (
            "same CrashLoopBackOff again (another watch event)",
            Some(crashloop(3)),
            crashloop(3),
            vec![],
        ),
        (
            "CrashLoopBackOff after another restart",
            Some(crashloop(3)),
            crashloop(4),
            vec![(
                FindingKind::CrashLoopBackOff,
                "uid-1/app/CrashLoopBackOff/4",
                "CrashLoopBackOff",
            )],
        ),
        (
            "first sight of a crash-looping pod (sensor restart) keeps the id",
            None,
            crashloop(3),
            vec![(
                FindingKind::CrashLoopBackOff,
                "uid-1/app/CrashLoopBackOff/3",
                "CrashLoopBackOff",
            )],
        ),
        (
            "restarted and running again: nothing new",
            Some(crashloop(3)),
            pod(vec![container(running(), 4, Some(term("Error", 1, "t3")))]),
            vec![],
        ),
        (
            "OOMKilled and restarted",
            Some(healthy()),
            oom(1, running()),
            vec![(FindingKind::OomKilled, "uid-1/app/OOMKilled/1", "OOMKilled")],
        ),
        (
            "same OOM kill again",
            Some(oom(1, running())),
            oom(1, running()),
            vec![],
        ),
        (
            "OOM crash loop reports OOMKilled, not CrashLoopBackOff",
            Some(oom(1, running())),
            oom(2, waiting("CrashLoopBackOff")),
            vec![(FindingKind::OomKilled, "uid-1/app/OOMKilled/2", "OOMKilled")],
        ),
        (
            "terminated right now with OOMKilled",
            Some(healthy()),
            pod(vec![container(
                ContainerState::Terminated(term("OOMKilled", 137, "t0")),
                0,
                None,
            )]),
            vec![(FindingKind::OomKilled, "uid-1/app/OOMKilled/0", "OOMKilled")],
        ),
        (
            "ErrImagePull",
            None,
            pull("ErrImagePull", "img:1"),
            vec![(
                FindingKind::ImagePullBackOff,
                "uid-1/app/ImagePullBackOff/img:1",
                "ErrImagePull",
            )],
        ),
        (
            "ErrImagePull -> ImagePullBackOff is the same failure",
            Some(pull("ErrImagePull", "img:1")),
            pull("ImagePullBackOff", "img:1"),
            vec![],
        ),
        (
            "a new image failing to pull is new",
            Some(pull("ImagePullBackOff", "img:1")),
            pull("ImagePullBackOff", "img:2"),
            vec![(
                FindingKind::ImagePullBackOff,
                "uid-1/app/ImagePullBackOff/img:2",
                "ImagePullBackOff",
            )],
        ),
        (
            "InvalidImageName",
            Some(healthy()),
            pull("InvalidImageName", "Bad Image"),
            vec![(
                FindingKind::ImagePullBackOff,
                "uid-1/app/ImagePullBackOff/Bad Image",
                "InvalidImageName",
            )],
        ),
        (
            "CreateContainerConfigError",
            Some(pull("ContainerCreating", "img:1")),
            pull("CreateContainerConfigError", "img:1"),
            vec![(
                FindingKind::CreateContainerConfigError,
                "uid-1/app/CreateContainerConfigError/0",
                "CreateContainerConfigError",
            )],
        ),
        (
            "CreateContainerConfigError stays",
            Some(pull("CreateContainerConfigError", "img:1")),
            pull("CreateContainerConfigError", "img:1"),
            vec![],
        ),
        (
            "ContainerCreating is not a failure",
            None,
            pull("ContainerCreating", "img:1"),
            vec![],
        ),
        (
            "evicted by the kubelet",
            Some(healthy()),
            evicted(),
            vec![(FindingKind::PodEvicted, "uid-1/Evicted/0", "Evicted")],
        ),
        ("still evicted", Some(evicted()), evicted(), vec![]),
        (
            "failed but not evicted",
            None,
            PodView {
                phase: "Failed".into(),
                ..healthy()
            },
            vec![],
        ),
        (
            "a terminated Error without back-off is not a crash loop yet",
            Some(healthy()),
            pod(vec![container(
                ContainerState::Terminated(term("Error", 2, "t0")),
                0,
                None,
            )]),
            vec![],
        ),
    ];
    for (name, prev, cur, want) in cases {
        let got: Vec<_> = detect_pod(prev.as_ref(), &cur, 1_000)
            .into_iter()
            .map(|f| (f.kind, f.id, f.reason))
            .collect();
        let want: Vec<_> = want
            .into_iter()
            .map(|(k, id, r)| (k, id.to_owned(), r.to_owned()))
            .collect();
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn crash_loop_finding_carries_restart_count_exit_code_and_owner() {
    let f = detect_pod(Some(&healthy()), &crashloop(5), 42).remove(0);
    assert_eq!(f.restart_count, 5);
    assert_eq!(f.exit_code, Some(1));
    assert_eq!(f.container.as_deref(), Some("app"));
    assert_eq!(f.owner.unwrap().name, "api");
    assert_eq!(f.node, "node-a");
    assert_eq!(f.observed_at_ms, 42);
    assert_eq!(f.pod.unwrap().uid, "uid-1");
    assert!(f.message.contains("CrashLoopBackOff"));
}

#[test]
fn each_container_is_judged_on_its_own() {
    let mut sidecar = container(running(), 0, None);
    sidecar.name = "sidecar".into();
    let prev = pod(vec![container(running(), 0, None), sidecar.clone()]);
    let mut crashing_sidecar =
        container(waiting("CrashLoopBackOff"), 2, Some(term("Error", 1, "t")));
    crashing_sidecar.name = "sidecar".into();
    let cur = pod(vec![container(running(), 0, None), crashing_sidecar]);
    let found = detect_pod(Some(&prev), &cur, 0);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].container.as_deref(), Some("sidecar"));
    assert_eq!(found[0].id, "uid-1/sidecar/CrashLoopBackOff/2");
}
