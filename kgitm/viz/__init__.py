"""Pictures and pages for people: a pair's alignment picture (:mod:`kgitm.viz.explain`) and the HTML
retrieval report of runs (:mod:`kgitm.viz.report`). Everything draws with matplotlib's Agg backend."""
