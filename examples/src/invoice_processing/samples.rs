//! The invoices the example processes.

use super::IncomingInvoice;

/// A small clean invoice, a large one, and a faxed scan the first extraction cannot read well.
pub fn sample_invoices() -> Vec<IncomingInvoice> {
    vec![
        IncomingInvoice {
            source: "ap@ inbox: acme-INV-2024-0117.pdf".into(),
            text: "ACME OFFICE SUPPLIES GmbH\nInvoice INV-2024-0117, issued 2024-11-04, due 2024-12-04\n\
                   120 x A4 paper boxes ........ EUR 1,080.00\n12 x toner cartridges ........ EUR 204.50\n\
                   Total due: EUR 1,284.50"
                .into(),
        },
        IncomingInvoice {
            source: "ap@ inbox: helix-88231.pdf".into(),
            text: "HELIX CLOUD SERVICES Ltd\nInvoice 88231, issued 2024-11-01, due 2024-11-30\n\
                   Annual platform licence, 40 seats .... EUR 16,000.00\nPriority support ..... EUR 2,400.00\n\
                   Total due: EUR 18,400.00"
                .into(),
        },
        IncomingInvoice {
            source: "fax scan: nordic-freight.tiff (OCR)".into(),
            text: "N0RDIC FRE1GHT AB  lnv0ice N F-5512 (?)  due 2O24-12-1?\nPallet transp0rt Oslo-G0thenburg .. 2 ,15O.0O\n\
                   T0tal: EUR 2,1S0.00 ~~ smudged"
                .into(),
        },
    ]
}

/// A receipt nobody can read well: both extractions stay unsure and a person decides.
pub fn illegible_receipt() -> IncomingInvoice {
    IncomingInvoice {
        source: "phone photo: thermal-receipt.jpg (OCR)".into(),
        text: "THERMAL RECEIPT ... faded ... T0T L  ?? 4.. ,..".into(),
    }
}
