"""Face-landmark data: one record schema, dataset readers, transforms, grain pipelines."""
