"""Git-driven upgrades: live facts against the inventory (:mod:`.facts`), one plan across the
platform, Talos and Kubernetes (:mod:`.plan`, pure), the gates (:mod:`.gates`), the record for
resume and rollback (:mod:`.record`) and the rolling execution (:mod:`.run`)."""
