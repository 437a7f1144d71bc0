# Reserved for the locks models; filled in by that primitive's change.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("mega_cluster", "0001_initial")]

    operations = []
