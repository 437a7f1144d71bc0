# Reserved for the events models; filled in by that primitive's change.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("mega_cluster", "0002_locks")]

    operations = []
