//! Crews: sequential with templating, context and usage; hierarchical with delegation.

use std::sync::Arc;

use flow_core::{NoJournal, TokenUsage};
use flow_llm::{
    Agent, Crew, FnTool, Inputs, LlmError, Match, Process, Reply, Task, TaskContext, TestServer, ToolError,
};
use serde_json::json;

use crate::common::llm;

fn usage(p: u64, c: u64) -> TokenUsage {
    TokenUsage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c }
}

#[tokio::test]
async fn a_sequential_crew_fills_inputs_passes_context_and_sums_usage() {
    let server = TestServer::start().await.unwrap();
    server
        .when(Match::system_contains("You are Researcher"))
        .reply(Reply::text("Fact: the moon pulls the sea.").usage(100, 20));
    server
        .when(Match::system_contains("You are Writer"))
        .reply(Reply::text("Tides, explained for kids.").usage(50, 10));
    let client = Arc::new(llm(&server));
    let researcher =
        Agent::builder("Researcher", "Find facts about {topic}", "Meticulous").llm(client.clone()).build().unwrap();
    let writer =
        Agent::builder("Writer", "Explain {topic}", "Clear").llm(client).model("writer-model").build().unwrap();
    let crew = Crew::builder()
        .task(Task::new("Research {topic}", "Key facts").name("research").agent(&researcher))
        .task(Task::new("Write about {topic} for {audience}", "One paragraph").name("write").agent(&writer))
        .build()
        .unwrap();

    let out = crew.kickoff(&NoJournal, &Inputs::from([("topic", "tides"), ("audience", "kids")])).await.unwrap();

    assert_eq!(out.raw, "Tides, explained for kids.");
    assert_eq!(out.json, None);
    assert_eq!(out.tasks.len(), 2);
    assert_eq!(out.task("research").unwrap().raw, "Fact: the moon pulls the sea.");
    assert_eq!(out.task("write").unwrap().agent, "Writer");
    assert_eq!(out.task("research").unwrap().usage.total, usage(100, 20));
    assert_eq!(out.usage.total, usage(150, 30), "crew usage is the sum of its calls");
    let roles: Vec<_> = out.usage.calls.iter().map(|c| c.agent.as_deref().unwrap()).collect();
    assert_eq!(roles, ["Researcher", "Writer"]);
    assert_eq!(out.usage.by_model()["writer-model"], usage(50, 10));

    let requests = server.requests();
    assert!(requests[0].chat.system_text().contains("Your personal goal is: Find facts about tides"));
    assert!(requests[0].chat.last_user_text().unwrap().starts_with("Research tides"));
    let second = requests[1].chat.last_user_text().unwrap();
    assert!(second.starts_with("Write about tides for kids"), "{second}");
    assert!(second.contains("This is the context you're working with:\nFact: the moon pulls the sea."), "{second}");
    assert_eq!(requests[1].body["model"], "writer-model", "per-agent model");
}

#[tokio::test]
async fn tasks_choose_their_context() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::last_user_contains("Task A")).reply(Reply::text("output of A"));
    server.when(Match::last_user_contains("Task B")).reply(Reply::text("output of B"));
    server.when(Match::last_user_contains("Task C")).reply(Reply::text("output of C"));
    server.when(Match::last_user_contains("Task D")).reply(Reply::text("output of D"));
    let agent = Agent::builder("Worker", "Work", "Diligent").llm(Arc::new(llm(&server))).build().unwrap();
    let crew = Crew::builder()
        .task(Task::new("Task A", "a").name("a").agent(&agent))
        .task(Task::new("Task B", "b").name("b").agent(&agent).context(TaskContext::None))
        .task(Task::new("Task C", "c").name("c").agent(&agent).context(TaskContext::Tasks(vec!["a".into()])))
        .task(Task::new("Task D", "d").name("d").agent(&agent))
        .build()
        .unwrap();
    crew.kickoff(&NoJournal, &Inputs::new()).await.unwrap();
    let prompts: Vec<String> = server.requests().iter().map(|r| r.chat.last_user_text().unwrap().to_owned()).collect();
    assert!(!prompts[1].contains("context you're working with"));
    assert!(prompts[2].contains("output of A") && !prompts[2].contains("output of B"));
    assert!(prompts[3].contains("output of A\n\n----------\n\noutput of B\n\n----------\n\noutput of C"));
}

#[tokio::test]
async fn a_missing_input_fails_before_any_call() {
    let server = TestServer::start().await.unwrap();
    let agent = Agent::builder("Worker", "Work on {topic}", "Diligent").llm(Arc::new(llm(&server))).build().unwrap();
    let crew = Crew::builder().task(Task::new("About {topic}", "x").agent(&agent)).build().unwrap();
    let err = crew.kickoff(&NoJournal, &Inputs::new()).await.unwrap_err();
    assert!(matches!(&err, LlmError::MissingInput { name, .. } if name == "topic"), "{err:?}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_hierarchical_manager_delegates_to_a_coworker() {
    let server = TestServer::start().await.unwrap();
    server.when(Match::system_contains("You are Crew Manager").and(Match::has_tool_results())).respond(|req| {
        let result = req.chat.messages.last().unwrap().text_or_empty().to_owned();
        Reply::text(format!("Final: {result}")).usage(30, 5)
    });
    server.when(Match::system_contains("You are Crew Manager")).reply(
        Reply::tool_call(
            "delegate_work_to_coworker",
            json!({"task": "Find facts on tides", "context": "for a children's article", "coworker": "researcher"}),
        )
        .usage(20, 5),
    );
    server.when(Match::system_contains("You are Researcher")).reply(Reply::text("tides follow the moon").usage(10, 5));
    let client = Arc::new(llm(&server));
    let researcher = Agent::builder("Researcher", "Find facts", "Meticulous").llm(client.clone()).build().unwrap();
    let writer = Agent::builder("Writer", "Write", "Clear").llm(client.clone()).build().unwrap();
    let crew = Crew::builder()
        .agent(&researcher)
        .agent(&writer)
        .task(Task::new("Produce an article on {topic}", "An article"))
        .process(Process::Hierarchical { manager: Agent::manager(client) })
        .build()
        .unwrap();

    let out = crew.kickoff(&NoJournal, &Inputs::from([("topic", "tides")])).await.unwrap();
    assert_eq!(out.raw, "Final: tides follow the moon");
    assert_eq!(out.tasks[0].agent, "Crew Manager");
    assert_eq!(server.hits(), 3);
    assert_eq!(out.usage.total, usage(60, 15), "the coworker's tokens count for the crew");
    let roles: Vec<_> = out.usage.calls.iter().map(|c| c.agent.as_deref().unwrap()).collect();
    assert_eq!(roles, ["Crew Manager", "Researcher", "Crew Manager"]);

    let requests = server.requests();
    let tools = requests[0].body["tools"].as_array().unwrap();
    let names: Vec<_> = tools.iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["delegate_work_to_coworker", "ask_question_to_coworker"]);
    assert_eq!(tools[0]["function"]["parameters"]["properties"]["coworker"]["enum"], json!(["Researcher", "Writer"]));
    let delegated = requests[1].chat.last_user_text().unwrap();
    assert!(delegated.starts_with("Find facts on tides"), "{delegated}");
    assert!(delegated.contains("for a children's article"), "{delegated}");
}

#[tokio::test]
async fn an_unknown_coworker_goes_back_to_the_manager() {
    let server = TestServer::start().await.unwrap();
    server
        .when(Match::system_contains("You are Crew Manager").and(Match::has_tool_results()))
        .respond(|req| Reply::text(req.chat.messages.last().unwrap().text_or_empty().to_owned()));
    server.when(Match::any()).reply(Reply::tool_call(
        "ask_question_to_coworker",
        json!({"question": "why?", "context": "", "coworker": "Astronaut"}),
    ));
    let client = Arc::new(llm(&server));
    let researcher = Agent::builder("Researcher", "Find facts", "Meticulous").llm(client.clone()).build().unwrap();
    let crew = Crew::builder()
        .task(Task::new("Investigate", "An answer").agent(&researcher))
        .process(Process::Hierarchical { manager: Agent::manager(client) })
        .build()
        .unwrap();
    let out = crew.kickoff(&NoJournal, &Inputs::new()).await.unwrap();
    assert!(out.raw.contains("no coworker named \"Astronaut\"") && out.raw.contains("Researcher"), "{}", out.raw);
}

#[test]
fn invalid_crews_are_rejected_with_reasons() {
    let llm = Arc::new(flow_llm::ScriptedLlm::new("m"));
    let worker = Agent::builder("Worker", "g", "b").llm(llm.clone()).build().unwrap();
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct NoArgs {}
    let tool = FnTool::new("t", "d", |_: NoArgs| async { Ok::<_, ToolError>("") }).unwrap();
    let busy_manager = Agent::builder("Boss", "g", "b").llm(llm.clone()).tool(tool).build().unwrap();

    let err = |b: flow_llm::CrewBuilder| b.build().unwrap_err().to_string();
    assert!(err(Crew::builder()).contains("no tasks"));
    assert!(err(Crew::builder().task(Task::new("d", "e"))).contains("has no agent"));
    assert!(
        err(Crew::builder()
            .task(Task::new("d", "e").agent(&worker).context(TaskContext::Tasks(vec!["later".into()])))
            .task(Task::new("d", "e").name("later").agent(&worker)))
        .contains("not an earlier task")
    );
    assert!(
        err(Crew::builder()
            .task(Task::new("d", "e").name("x").agent(&worker))
            .task(Task::new("d", "e").name("x").agent(&worker)))
        .contains("two tasks are named `x`")
    );
    assert!(
        err(Crew::builder()
            .agent(&worker)
            .task(Task::new("d", "e"))
            .process(Process::Hierarchical { manager: busy_manager }))
        .contains("has tools")
    );
    assert!(
        err(Crew::builder()
            .agent(&worker)
            .task(Task::new("d", "e"))
            .process(Process::Hierarchical { manager: worker.clone() }))
        .contains("also one of the crew's agents")
    );
}
