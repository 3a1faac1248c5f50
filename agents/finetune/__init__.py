"""The fine-tuning worker: takes runs off the arq queue, trains (``modelfile``, ``lora``) and hands
the Model to register back to the control plane through the job's row."""
