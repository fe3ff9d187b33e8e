//! Invoice processing, offline end to end: the router's three autonomy levels under the
//! default limit (auto-approve, a person for the large invoice, a fallback extraction for the
//! fax), a raised limit that needs no person, a rejection, an unreadable receipt, and the
//! limit's parsing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_core::RunStatus;
use flow_core::store::{SqliteStore, Store};
use flow_examples::ExampleError;
use flow_examples::invoice_processing::{self, ApprovalAnswer, Config, InvoiceStatus, illegible_receipt, parse_limit};

fn approve(approve: bool) -> ApprovalAnswer {
    ApprovalAnswer { approve, approver: "Priya".into(), note: "checked".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_high_value_and_low_confidence_invoices_take_their_routes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let mut asked = Vec::new();
    let out = invoice_processing::run(Config::offline(&db), |request| {
        asked.push(request.clone());
        approve(true)
    })
    .await
    .unwrap();

    assert_eq!(out.auto_approve_limit, 5_000.0);
    let routes: Vec<Vec<String>> = out.invoices.iter().map(|i| i.routes.clone()).collect();
    assert_eq!(
        routes,
        [
            vec!["triage → InvoiceRoute::Standard"],
            vec!["triage → InvoiceRoute::HighValue", "human_review → ReviewDecision::Approved"],
            vec!["triage → InvoiceRoute::LowConfidence", "triage → InvoiceRoute::Standard"],
        ]
    );
    let statuses: Vec<InvoiceStatus> = out.invoices.iter().map(|i| i.state.status).collect();
    assert_eq!(statuses, [InvoiceStatus::AutoApproved, InvoiceStatus::Approved, InvoiceStatus::AutoApproved]);
    assert!(out.invoices.iter().all(|i| i.state.ledger_entry.as_deref().is_some_and(|e| e.starts_with("GL-"))));

    // Only the large invoice waited for a person; it was stored as paused meanwhile.
    assert_eq!(asked.len(), 1);
    let (request, waiting, answer) = out.invoices[1].pause.as_ref().unwrap();
    assert_eq!(*waiting, RunStatus::Paused);
    assert_eq!(request.method, "human_review");
    assert!(request.prompt.contains("18400.00") && request.prompt.contains("limit of 5000.00"), "{}", request.prompt);
    assert_eq!(request.metadata["extraction"]["vendor"], "Helix Cloud Services Ltd");
    assert_eq!(out.invoices[1].state.review.as_ref(), Some(answer));
    assert!(out.invoices[0].pause.is_none() && out.invoices[2].pause.is_none());

    // The fax: the fallback extraction repaired the OCR errors.
    let fax = out.invoices[2].state.extraction.as_ref().unwrap();
    assert_eq!(out.invoices[2].state.extraction_attempts, 2);
    assert_eq!((fax.vendor.as_str(), fax.invoice_number.as_str(), fax.total), ("Nordic Freight AB", "NF-5512", 2150.0));
    assert!(fax.confidence >= invoice_processing::MIN_CONFIDENCE);

    // Stored runs: completed, each with the limit it ran under.
    let store = SqliteStore::open(&db).await.unwrap();
    for inv in &out.invoices {
        assert_eq!(inv.stored_status, RunStatus::Completed);
        let record = store.load_run(inv.run_id).await.unwrap();
        assert_eq!(record.status, RunStatus::Completed);
        assert_eq!(record.snapshot.state_as::<serde_json::Value>().unwrap()["auto_approve_limit"], 5_000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_limit_approves_the_large_invoice_without_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.auto_approve_limit = parse_limit("20000").unwrap();
    let out = invoice_processing::run(config, |_| panic!("no person should be asked")).await.unwrap();
    assert_eq!(out.invoices[1].routes, ["triage → InvoiceRoute::Standard"]);
    assert_eq!(out.invoices[1].state.status, InvoiceStatus::AutoApproved);
    assert!(out.invoices.iter().all(|i| i.pause.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_invoice_is_not_posted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.invoices.truncate(2);
    let out = invoice_processing::run(config, |_| approve(false)).await.unwrap();
    let large = &out.invoices[1];
    assert_eq!(large.routes, ["triage → InvoiceRoute::HighValue", "human_review → ReviewDecision::Rejected"]);
    assert_eq!(large.state.status, InvoiceStatus::Rejected);
    assert!(large.state.ledger_entry.is_none());
    assert_eq!(large.stored_status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_still_unclear_after_the_fallback_goes_to_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::offline(dir.path().join("runs.db"));
    config.invoices = vec![illegible_receipt()];
    let out = invoice_processing::run(config, |_| approve(false)).await.unwrap();
    let receipt = &out.invoices[0];
    assert_eq!(
        receipt.routes,
        [
            "triage → InvoiceRoute::LowConfidence",
            "triage → InvoiceRoute::StillUnclear",
            "human_review → ReviewDecision::Rejected"
        ]
    );
    assert!(receipt.pause.as_ref().unwrap().0.prompt.contains("could not be read"));
    assert_eq!(receipt.state.extraction_attempts, 2);
}

#[test]
fn the_limit_is_parsed_strictly() {
    assert_eq!(parse_limit(" 12500.50 ").unwrap(), 12_500.5);
    for bad in ["12,500", "-1", "lots", "NaN"] {
        let err = parse_limit(bad).unwrap_err();
        assert!(matches!(err, ExampleError::Env { name: "INVOICE_AUTO_APPROVE_LIMIT", .. }), "{bad}: {err}");
    }
}

/// A reviewer's note on one invoice is remembered for its supplier: the next invoice of that
/// supplier (a later batch, the same store) is extracted with it in the prompt; another
/// supplier's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewers_correction_reaches_the_next_invoice_of_the_same_supplier() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let helix = invoice_processing::sample_invoices().remove(1);
    let note = "Helix bills the 40 seats per year, check the seat count against the contract";
    let first = invoice_processing::run(Config { invoices: vec![helix.clone()], ..Config::offline(&db) }, |_| {
        ApprovalAnswer { approve: true, approver: "Priya".into(), note: note.into() }
    })
    .await
    .unwrap();
    assert_eq!(first.invoices[0].state.status, InvoiceStatus::Approved);
    let said = |out: &invoice_processing::Outcome| -> Vec<String> {
        out.requests.iter().map(|r| r.body.to_string()).filter(|b| b.contains("Extract this invoice")).collect()
    };
    assert!(said(&first).iter().all(|b| !b.contains("Reviewers corrected")), "nothing known yet");

    let mut batch = invoice_processing::sample_invoices();
    batch.swap(0, 1); // Helix first, then Acme.
    batch.truncate(2);
    let second =
        invoice_processing::run(Config { invoices: batch, ..Config::offline(&db) }, |_| approve(true)).await.unwrap();
    let prompts = said(&second);
    assert_eq!(prompts.len(), 2, "{prompts:#?}");
    assert!(prompts[0].contains("Reviewers corrected this supplier's earlier invoices"), "{}", prompts[0]);
    assert!(prompts[0].contains(&format!("Priya on invoice 88231: {note}")), "{}", prompts[0]);
    assert!(!prompts[1].contains("Reviewers corrected"), "Acme's invoice gets Helix's note: {}", prompts[1]);
}
