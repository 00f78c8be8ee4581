-- A model version names the drift report that triggered its training, so its whole
-- provenance (artifact, dataset, lineage, drift report, bias audit) can be verified from it.
ALTER TABLE rai.drift_reports ADD CONSTRAINT drift_reports_tenant_id_id_key UNIQUE (tenant_id, id);

ALTER TABLE rai.model_versions
    ADD COLUMN drift_report_id uuid,
    ADD CONSTRAINT model_versions_drift_report_fkey
        FOREIGN KEY (tenant_id, drift_report_id) REFERENCES rai.drift_reports (tenant_id, id);
