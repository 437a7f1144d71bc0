from mega_cluster import Plugin


class OnePlugin(Plugin):
    pass


class OtherPlugin(Plugin):
    pass
