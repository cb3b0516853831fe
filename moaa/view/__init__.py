"""The viewer and review gate of data set versions: `moaa view` (a local web app, Starlette and
server-rendered Jinja2 templates) and `moaa review apply`.

- moaa.view.paging: a version's configs as paged, filtered tables, a parquet row group at a time
  (moaa.view.row_filters: what each filter tests)
- moaa.view.decisions: a person's review decisions, appended to `<root>/<name>/vN.review.jsonl`
- moaa.view.reviewed: the decisions applied as the next version (moaa.dataset.versions.write_derived)
- moaa.view.catalog, moaa.view.mixture, moaa.view.pair_detail, moaa.view.arms, moaa.view.version_diff,
  moaa.view.textdiff: what the pages show
- moaa.view.pages: the pages, rendered from templates/ (moaa.view.links: where each page is);
  moaa.view.webapp: the Starlette app and the review API; moaa.view.snapshot: the pages as static
  HTML; moaa.view.serving: the port, the token, uvicorn
"""
